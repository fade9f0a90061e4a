"""A zoo of models the scorer once miscounted without saying so (issue #31), built here (no downloads).

Each model is either counted to a value written out by hand below (per-op formulas of docs/scoring.md,
never a call to the scorer), or refused with a message whose suggestion, followed literally (the call
in backquotes, with the per-element counts filled in), makes it count to that value.
"""

import re
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.scoring import UnsupportedOpError, count, register_op_cost
from micronet_lib.scoring.widths import tree_width


# ------------------------------------------------------------------------------------------ helpers

def refused(model, size, **options) -> str:
    with pytest.raises((UnsupportedOpError, ValueError)) as info:
        count(model, size, **options)
    return str(info.value)


def _seed_nonzero(model):
    """Deterministic weights with no exact zero (so no mask bits), biases 1 (so nnz(b) = C_out)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("bias") else torch.rand(p.shape, generator=g) + 0.5)
    return model


N = 8 * 8 * 8  # outputs of a 3->8 conv on an 8x8 input: every zoo model starts with one
CONV_K = 27  # 3x3x3 weights per output


# --------------------------------------------------------------- case 1: a layer with parameters

class ChannelAffine(nn.Module):
    """A per-channel affine layer (an unfused BN): y = x * w[c] + b[c]."""

    def __init__(self, channels=8):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ChannelAffineNoDefault(ChannelAffine):
    def __init__(self, channels):
        super().__init__(channels)


def _affine_net(cls):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), cls(8))


# conv: n·K mults, n·K adds (the folded bias add included), 216 + 8 values; affine: 1 mult + 1 add per
# element, its 2·8 values stored.
AFFINE = dict(values=216 + 8 + 16, mults=N * CONV_K + N, adds=N * CONV_K + N)


def _totals(report):
    e = report.exact
    return dict(values=e["params"], mults=e["mults"], adds=e["adds"])


def test_affine_layer_counted_without_registration():
    r = count(_affine_net(ChannelAffine), (1, 3, 8, 8), convention="official", freebie=False)
    assert _totals(r) == AFFINE


def test_register_op_cost_refuses_a_class_with_parameters(scoring_registry, follow):
    # Default-constructible: refused at registration, naming register_module with the exact call.
    with pytest.raises(ValueError, match="has parameters.*register_module") as info:
        register_op_cost(ChannelAffine, mults=1, adds=1)
    [call] = follow.calls(str(info.value))
    assert call.startswith("micronet_lib.scoring.register_module(test_scoring_zoo.ChannelAffine,")
    follow(call, mults=1, adds=1)
    assert _totals(count(_affine_net(ChannelAffine), (1, 3, 8, 8), convention="official", freebie=False)) == AFFINE
    # Not default-constructible: accepted, then refused when traced (nothing recorded silently).
    register_op_cost(ChannelAffineNoDefault, mults=1, adds=1)
    message = refused(_affine_net(ChannelAffineNoDefault), (1, 3, 8, 8))
    assert "register_op_cost, which stores no parameters" in message
    [call] = follow.calls(message)
    follow(call, mults=1, adds=1)
    r = count(_affine_net(ChannelAffineNoDefault), (1, 3, 8, 8), convention="official", freebie=False)
    assert _totals(r) == AFFINE


def test_register_op_cost_refuses_a_class_name_string(scoring_registry, follow):
    with pytest.raises(ValueError, match="looks like a class name") as info:
        register_op_cost("ChannelAffineNoDefault", mults=1, adds=1)
    [call] = follow.calls(str(info.value))
    follow(call, mults=1, adds=1)
    r = count(_affine_net(ChannelAffineNoDefault), (1, 3, 8, 8), convention="official", freebie=False)
    assert _totals(r) == AFFINE


# ------------------------------------------------ case 2: subclasses with a fused activation

class ConvHardswish2d(nn.Conv2d):
    def forward(self, x):
        return F.hardswish(super().forward(x))


class BatchNormReLU2d(nn.BatchNorm2d):
    def forward(self, x):
        return F.relu(super().forward(x))


class MaskedLikeConv2d(nn.Conv2d):
    """Only construction differs: computes what nn.Conv2d computes, so it is counted as one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = "pruned"


def _fused_net(conv=ConvHardswish2d, bn=BatchNormReLU2d):
    return _seed_nonzero(nn.Sequential(conv(3, 8, 3, padding=1, bias=False), bn(8), nn.AdaptiveAvgPool2d(1),
                                       nn.Flatten(), nn.Linear(8, 10)))


@pytest.mark.parametrize("convention", ["official", "kaist"])
def test_fused_norm_activation_subclasses_are_traced_through(convention):
    r = count(_fused_net(), (1, 3, 8, 8), convention=convention, freebie=False)
    pool_adds = 63 * 8 if convention == "official" else 64 * 8  # (H²−1)·C or H·W·C (§5.2)
    fc_adds = 8 * 10 if convention == "official" else 7 * 10  # vl·C_out or (C_in−1)·C_out
    expected = dict(values=216 + 8 + 80 + 10,  # conv + folded bias; FC weights + bias (nnz(b) = 10)
                    mults=N * CONV_K + 4 * N + N + 8 + 80,  # conv, hardswish 4/elt, relu 1/elt, 8 divides, FC
                    adds=N * CONV_K + N + pool_adds + fc_adds)  # conv, hardswish 1/elt, pool, FC
    assert _totals(r) == expected
    plain = count(_fused_net(nn.Conv2d, nn.BatchNorm2d), (1, 3, 8, 8), convention=convention, freebie=False).exact
    assert r.exact["mults"] - plain["mults"] == 5 * N and r.exact["adds"] - plain["adds"] == N  # the fused math


def test_subclass_that_only_changes_construction_counts_as_its_base():
    a = count(_fused_net(MaskedLikeConv2d, nn.BatchNorm2d), (1, 3, 8, 8), freebie=False)
    b = count(_fused_net(nn.Conv2d, nn.BatchNorm2d), (1, 3, 8, 8), freebie=False)
    assert a.exact == b.exact and a.table.op.iloc[0].startswith("Conv2d 3x3")


# ------------------------------------ case 3: a third-party SqueezeExcite (the authors' class name)

class SqueezeExcite(nn.Module):
    def __init__(self, c=8, r=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


def test_kaist_omissions_are_keyed_by_the_authors_classes_not_by_name():
    net = _seed_nonzero(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), SqueezeExcite()))
    r = count(net, (1, 3, 8, 8), convention="kaist", freebie=False)
    assert r.summary["omitted_ops"] == 0 and "omitted by kaist: none" in r.accounting()
    expected = dict(values=224 + (16 + 2) + (16 + 8),  # conv; fc1 8->2 and fc2 2->8 with their biases
                    # conv; pool 1 divide/channel; fc1; relu; fc2; sigmoid 2/elt; the gate N (charged)
                    mults=N * CONV_K + 8 + 16 + 2 + 16 + 2 * 8 + N,
                    adds=N * CONV_K + 64 * 8 + 16 + 16 + 8)  # conv; pool H·W/channel (kaist); fc1; fc2; sigmoid
    assert _totals(r) == expected
    # The project's own SqueezeExcite (in a MicroBlock) keeps the authors' omission, and says so.
    from micronet_lib.models.blocks import MicroBlock

    own = count(MicroBlock(8, 8, expanded=16, se_hidden=2, stride=1), (1, 8, 8, 8), convention="kaist")
    assert own.summary["omitted_ops"] == 2 and "omitted by kaist: 2 op(s)" in own.accounting()


# ------------------------------------------------------------ case 4: parameters of the root module

class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls_token = nn.Parameter(torch.ones(1, 1, 8))

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1)[:, 0]


def test_root_parameters_are_declared_not_swallowed(follow):
    message = refused(TokenNet(), (1, 3, 8, 8))
    assert "cls_token (TokenNet)" in message and "register_module" not in message  # no whole-model advice
    [call] = follow.calls(message)
    options = follow(call)
    assert options == {"extra_params": {"cls_token": 32}}
    r = count(TokenNet(), (1, 3, 8, 8), convention="official", freebie=False, **options)
    # patch conv 4x4/s4 3->8: 2·2·8 outputs of K = 48; 384 + 8 values; the class token's 8 values at 32 bits.
    assert _totals(r) == dict(values=384 + 8 + 8, mults=32 * 48, adds=32 * 48)
    free = count(TokenNet(), (1, 3, 8, 8), extra_params={"cls_token": "constant folded into the first token"})
    assert free.exact["params"] == 392 and "parameter not stored" in free.summary["declared_free"]
    with pytest.raises(ValueError, match="closest: \\['cls_token'\\]"):
        count(TokenNet(), (1, 3, 8, 8), extra_params={"cls_tokn": 32})


# ------------------------------------------------------------ case 5: bit-width globs that match nothing

class Features(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
        self.classifier = nn.Conv2d(8, 4, 1, bias=False)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_unmatched_or_shadowed_globs_are_errors_listing_the_closest_paths():
    message = refused(Features(), (1, 3, 8, 8), freebie=False, param_bits={"feature.0": 8})
    closest = re.search(r"closest op paths: (.*)$", message).group(1).split(", ")
    assert closest[0] == "features.0"
    r = count(Features(), (1, 3, 8, 8), convention="official", freebie=False, param_bits={closest[0]: 8})
    assert r.exact["params_s"] == Fraction((216 + 8) * 8, 32) + (32 + 4)  # the named layer at 8 bits, the rest 32
    with pytest.raises(ValueError, match="'classifier' sets no width.*first match wins"):
        count(Features(), (1, 3, 8, 8), freebie=False, param_bits={"*": 8, "classifier": 4})


# ---------------------------------------------------------------------------- a tiny vision transformer

class TinyViT(nn.Module):
    """Patch conv, class token, position embedding, one pre-norm block (attention + MLP), linear head."""

    def __init__(self, attention="module", dim=8, heads=2):
        super().__init__()
        self.attention, self.heads = attention, heads
        self.patch = nn.Conv2d(3, dim, 4, stride=4)  # 8x8 input -> 4 tokens
        self.cls_token = nn.Parameter(torch.ones(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.ones(1, 5, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if attention == "module":
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        else:
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def _attend(self, h):
        if self.attention == "module":
            return self.attn(h, h, h, need_weights=False)[0]
        n, length, dim = h.shape
        q, k, v = self.qkv(h).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, dim))

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        t = t + self._attend(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return self.head(t[:, 0])


LN = (5, 4)  # the per-element cost the test declares for LayerNorm when the scorer asks for one
GELU = (7, 3)


def _vit_by_hand(convention: str) -> dict:
    """docs/scoring.md 'Attention and matmul', for L = 5 tokens, E = 8, H = 2 heads of d = 4."""
    length, e, h, d = 5, 8, 2, 4
    kaist = convention == "kaist"

    def linear(rows, c_in, c_out):  # (values, mults, adds); biases are 1, so nnz(b) = C_out in both
        adds = rows * c_out * (c_in - 1 if kaist else c_in)
        return c_in * c_out + c_out, rows * c_out * c_in, adds

    parts = [
        (384 + 8, 32 * 48, 32 * 48),  # patch conv 4x4/s4 3->8: 2·2·8 outputs, K = 48
        (40, 0, length * e),  # + pos_embed: 40 adds, its 40 values stored
        (16, length * e * LN[0], length * e * LN[1]),  # norm1 as declared, its 2·8 values
        linear(length, e, 3 * e),  # q, k, v projections (one 24x8 weight, 24 biases)
        (0, h * length * d, 0),  # scale q by 1/sqrt(d)
        (0, h * length * length * d, h * length * length * (d - 1)),  # q @ kᵀ
        (0, 2 * h * length * length, h * length * (length - 1)),  # softmax: exp + divide; row sums
        (0, h * length * d * length, h * length * d * (length - 1)),  # attn @ v
        linear(length, e, e),  # output projection
        (0, 0, length * e),  # residual add
        (16, length * e * LN[0], length * e * LN[1]),  # norm2
        linear(length, e, 2 * e),
        (0, length * 2 * e * GELU[0], length * 2 * e * GELU[1]),  # GELU as declared
        linear(length, 2 * e, e),
        (0, 0, length * e),  # residual add
        linear(1, e, 10),  # head on the class token
        (8, 0, 0),  # the class token, declared stored
    ]
    return dict(values=sum(p[0] for p in parts), mults=sum(p[1] for p in parts), adds=sum(p[2] for p in parts))


def test_tiny_vit_refused_then_counted_by_following_the_messages(scoring_registry, follow):
    vit = _seed_nonzero(TinyViT())
    message = refused(vit, (1, 3, 8, 8))
    assert "'layer_norm'" in message
    [call] = follow.calls(message)  # LayerNorm has parameters: only a module registration stores them
    assert call.startswith("micronet_lib.scoring.register_module(torch.nn.modules.normalization.LayerNorm,")
    follow(call, *LN)
    message = refused(vit, (1, 3, 8, 8))
    assert "'gelu'" in message
    op_call, module_call = follow.calls(message)  # parameter-free: the op's cost, or the module as one unit
    assert op_call.startswith("micronet_lib.scoring.register_op_cost('gelu'") and "params=()" in module_call
    follow(op_call, *GELU)
    message = refused(vit, (1, 3, 8, 8))
    [call] = follow.calls(message)
    options = follow(call)
    assert options == {"extra_params": {"cls_token": 32}}
    for convention in ("official", "kaist"):
        r = count(vit, (1, 3, 8, 8), convention=convention, freebie=False, **options)
        assert _totals(r) == _vit_by_hand(convention), convention


def test_scaled_dot_product_attention_counts_like_the_module(scoring_registry, follow):
    register_op_cost("layer_norm", mults=LN[0], adds=LN[1])  # the layer_norm row's values: below
    register_op_cost("gelu", mults=GELU[0], adds=GELU[1])
    vit = _seed_nonzero(TinyViT("functional"))
    names = ["cls_token", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    extra = {n: 32 for n in names}  # an op cost stores nothing: declare the LayerNorm parameters instead
    for convention in ("official", "kaist"):
        r = count(vit, (1, 3, 8, 8), convention=convention, freebie=False, extra_params=extra)
        assert _totals(r) == _vit_by_hand(convention), convention


def test_attention_module_returning_weights_charges_their_head_average():
    attn = nn.MultiheadAttention(8, 2, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, x):
            out, weights = self.attn(x, x, x)  # need_weights=True by default: averaged over the heads
            return out + weights.sum(-1, keepdim=True)

    with pytest.raises(UnsupportedOpError, match="'sum'"):  # a reduction with no defined cost: loud
        count(Net(), (1, 5, 8))
    Net.forward = lambda self, x: self.attn(x, x, x)[0]
    table = count(Net(), (1, 5, 8), convention="official", freebie=False).table
    avg = table[table.path == "attn.average_weights"].iloc[0]
    assert (avg.mults, avg.adds) == (5 * 5, 5 * 5 * (2 - 1))  # 1 divide + (H−1) adds per averaged weight


# ------------------------------------------------------------- a quantised model with its own quantiser

class Quantiser(nn.Module):
    """Learned-step fake quantiser to signed 4 bits: clamp(round(x / s), -8, 7) · s."""

    def __init__(self):
        super().__init__()
        self.step = nn.Parameter(torch.tensor(0.1))

    def forward(self, x):
        return torch.clamp(torch.round(x / self.step), -8, 7) * self.step


class QuantisedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.q0 = Quantiser()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.q1 = Quantiser()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.q1(self.conv(self.q0(x))))))


def test_tree_width_rule():
    # sums of n terms: floor(m/2) adds per level, one bit wider per level, an odd term carried up unchanged
    assert tree_width(2, 8) == 8 and tree_width(3, 8) == Fraction(8 + 9, 2)
    assert tree_width(28, 8) == Fraction(14 * 8 + 7 * 9 + 3 * 10 + 2 * 11 + 1 * 12, 27)
    assert tree_width(2 ** 20, 30) < 32 + 1 and tree_width(1, 8) == 8


def test_quantiser_registered_as_one_unit_with_tree_accumulators(scoring_registry, follow):
    net = _seed_nonzero(QuantisedNet())
    message = refused(net, (1, 3, 8, 8))
    assert "'round'" in message and "register_op_cost('round'" not in message  # the unit, not round alone
    [call] = follow.calls(message)
    assert call.startswith("micronet_lib.scoring.register_module(test_scoring_zoo.Quantiser,")
    follow(call, mults=0, adds=0)  # a format conversion: free (docs/scoring.md §2.3), its step stored
    r = count(net, (1, 3, 8, 8), convention="official", freebie=False, param_bits={"conv": 4, "fc": 8},
              act_bits={"conv": 4, "fc": 4}, accumulator_bits="tree:8")
    conv_adds_width = tree_width(CONV_K + 1, 8)  # 27 products and the folded bias per output
    params_s = 1 + Fraction((216 + 8) * 4, 32) + 1 + Fraction((80 + 10) * 8, 32)  # steps at 32 bits
    ops_s = (N * CONV_K * Fraction(4, 32) + N * CONV_K * conv_adds_width / 32  # 4-bit x 4-bit products
             + 8 + 63 * 8 * tree_width(64, 8) / 32  # pool: 8 divides at 32 bits, 63 adds per channel
             + 80 * Fraction(8, 32) + 80 * tree_width(9, 8) / 32)  # fc: 8-bit weights x 4-bit inputs
    assert (r.exact["params_s"], r.exact["ops_s"]) == (params_s, ops_s)
    assert float(ops_s) == 5742.4375  # the same sum, written out in docs/scoring.md
    net.accumulator_bits = "tree:8"  # the same rule declared on the model, read with accumulator_bits="model"
    r = count(net, (1, 3, 8, 8), convention="official", freebie=False, param_bits={"conv": 4, "fc": 8},
              act_bits={"conv": 4, "fc": 4}, accumulator_bits="model")
    assert r.exact["ops_s"] == ops_s


class LookupTable(nn.Module):
    """A leaf whose parameter reaches the output only through a layout op (no counted op uses it)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.ones(4, 8))

    def forward(self, x):
        return torch.cat([x, self.table.unsqueeze(0).expand(x.shape[0], -1, -1)], 1)


def test_unused_leaf_parameter_both_suggestions_work(scoring_registry, follow):
    net = nn.Sequential(nn.Linear(8, 8), LookupTable())
    message = refused(net, (1, 2, 8))
    declare, register = follow.calls(message)
    r = count(net, (1, 2, 8), convention="official", freebie=False, **follow(declare))
    assert r.exact["params"] == 72 + 32  # the Linear, and the table declared stored (dense)
    follow(register, mults=0, adds=0)
    r = count(net, (1, 2, 8), convention="official", freebie=False)
    assert r.exact["params"] == 72 + 32 and r.exact["mults"] == 2 * 8 * 8  # one unit storing its table


class ScaledWeightConv(nn.Module):
    """A layer that computes its weight in the forward (weight normalisation by hand)."""

    def __init__(self):
        super().__init__()
        self.v = nn.Parameter(torch.ones(8, 3, 3, 3))
        self.g = nn.Parameter(torch.ones(8, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.v * self.g, padding=1)


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)

    def forward(self, x):
        return self.attn(x, x[..., :4], x[..., :4], need_weights=False)[0]


@pytest.mark.parametrize("model, size, what", [
    (ScaledWeightConv(), (1, 3, 8, 8), "does not act on the batch"),  # the weight product, before the conv
    (CrossAttention(), (1, 5, 8), "kdim = vdim = embed_dim"),
    (nn.Sequential(nn.Conv2d(3, 8, 1), nn.AdaptiveAvgPool2d(3)), (1, 3, 8, 8), "unequal windows"),
    (nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2, mode="bilinear")), (1, 3, 4, 4), "upsample"),
])
def test_other_refusals_count_when_their_suggestion_is_followed(scoring_registry, follow, model, size, what):
    message = refused(model, size)
    assert what in message
    calls = follow.calls(message)
    assert calls
    for call in calls:
        scoring_registry()
        follow(call, mults=1, adds=1)
        r = count(model, size, convention="official", freebie=False)
        # counted: every parameter stored (dense here: no exact zeros in a fresh init), ops charged
        assert r.exact["params"] == sum(p.numel() for p in model.parameters()) and r.exact["mults"] > 0


def test_a_shadowed_glob_counts_once_put_first():
    with pytest.raises(ValueError, match="put it before them"):
        count(Features(), (1, 3, 8, 8), freebie=False, param_bits={"*": 8, "classifier": 4})
    r = count(Features(), (1, 3, 8, 8), convention="official", freebie=False, param_bits={"classifier": 4, "*": 8})
    assert r.exact["params_s"] == Fraction((216 + 8) * 8, 32) + Fraction((32 + 4) * 4, 32)


def test_sequence_first_attention_is_refused_and_batch_first_counts():
    class SelfAttention(nn.Module):
        def __init__(self, batch_first):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    assert "batch_first=True" in refused(SelfAttention(False), (5, 1, 8))
    r = count(SelfAttention(True), (1, 5, 8), convention="official", freebie=False)
    # q, k, v and out projections 4·5·8·8 mults; scale 40; QKᵀ 2·5·5·4; softmax 2·50; AV 2·5·4·5
    assert r.exact["mults"] == 4 * 5 * 8 * 8 + 40 + 200 + 100 + 200
