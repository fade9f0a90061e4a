"""The tracer on toy models: functional ops are seen, unknown ops fail loudly, state is untouched."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.models.masks import attach_mask
from micronet_lib.scoring import UnsupportedOpError, count, list_conventions, register_convention, register_op_cost
from micronet_lib.scoring.conventions import Convention


class Residual(nn.Module):
    """conv → functional relu6 → SE-like gate via x.mean → residual add → GAP → FC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        u = F.relu6(self.bn(self.conv(x)))
        g = torch.sigmoid(u.mean((2, 3), keepdim=True))
        y = u * g + x
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def _rows(report, kind):
    return report.table[report.table.kind == kind]


def test_functional_ops_are_counted_official():
    r = count(Residual(), (1, 4, 8, 8), convention="official", freebie=False)
    t = r.table
    n = 4 * 8 * 8
    assert _rows(r, "conv").mults.sum() == n * 36  # n·K·d, dense
    relu6 = t[t.op == "relu6"].iloc[0]
    assert (relu6.mults, relu6.adds) == (2 * n, 0)
    assert _rows(r, "tensor_mul").mults.sum() == n  # the gate: Scale(H, C)
    assert _rows(r, "tensor_add").adds.sum() == n  # the residual: Add(H, C)
    pools = _rows(r, "avg_pool")
    assert list(pools.adds) == [63 * 4, 63 * 4] and list(pools.mults) == [4, 4]  # (H²−1)·C adds, C divides
    fc = _rows(r, "linear").iloc[0]
    assert (fc.params, fc.mults, fc.adds) == (50, 40, 40)  # 40 weights + 10 bias; vl·C_out adds
    # Only the parameters of conv (36·4 + 4 bias) and fc (40 + 10) are stored; BN is folded.
    assert r.summary["params"] == 148 + 50 and r.summary["mask_bits"] == 0


def test_kaist_drops_gate_and_residual_only_in_the_authors_blocks():
    k = count(Residual(), (1, 4, 8, 8), convention="kaist", freebie=False)
    o = count(Residual(), (1, 4, 8, 8), convention="official", freebie=False)
    # A toy's gate and residual are charged in kaist too (no op vanishes); only the pools and FC formulas
    # differ: pools H·W per channel (+4 adds each), FC (C_in − 1)·out adds (−10 vs 40).
    assert o.summary["mults"] == k.summary["mults"]
    assert o.summary["adds"] - k.summary["adds"] == -2 * 4 + 10
    from micronet_lib.models.blocks import MicroBlock

    block = MicroBlock(4, 4, expanded=8, se_hidden=2, stride=1)
    kb = count(block, (1, 4, 8, 8), convention="kaist", freebie=False).table
    ob = count(block, (1, 4, 8, 8), convention="official", freebie=False).table
    n = 4 * 8 * 8
    assert ob[ob.kind == "tensor_mul"].mults.sum() == n and ob[ob.kind == "tensor_add"].adds.sum() == n
    omitted = kb[kb.kind.isin(["tensor_mul", "tensor_add"])]
    assert len(omitted) == 2 and omitted[["mults", "adds"]].to_numpy().sum() == 0  # the authors' omissions
    assert omitted.note.str.contains("not counted in kaist").all()


def test_freebie_halves_params_and_mults_not_adds():
    on = count(Residual(), (1, 4, 8, 8), convention="official").summary
    off = count(Residual(), (1, 4, 8, 8), convention="official", freebie=False).summary
    assert on["params_s"] == off["params_s"] / 2
    assert on["ops_s"] == off["adds"] + off["mults"] / 2 and off["ops_s"] == off["adds"] + off["mults"]


def test_quantised_bits_forfeit_freebie():
    auto = count(Residual(), (1, 4, 8, 8), param_bits=8).summary  # below 16 bits: the freebie goes (§2.2)
    assert not auto["freebie"] and "below 16 bits (8)" in auto["freebie_forfeited"]
    assert auto["params_s"] == 198 * 8 / 32
    r = count(Residual(), (1, 4, 8, 8), convention="official", freebie=False, param_bits={"conv": 8}).table
    conv, fc = r[r.path == "conv"].iloc[0], r[r.path == "fc"].iloc[0]
    assert conv.params_s == 148 * 8 / 32 and fc.params_s == 50  # b/32; unlisted layers stay 32-bit
    assert conv.ops_s == conv.adds + conv.mults  # 8-bit weight × 32-bit activation costs 1 (docs/scoring.md §2.3)
    with pytest.raises(ValueError, match="param_bits"):
        count(Residual(), (1, 4, 8, 8), freebie=False, param_bits=0)


def test_masked_subclass_and_zeros_are_counted():
    class MaskedConv(nn.Conv2d):
        pass

    net = nn.Sequential(MaskedConv(3, 8, 1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    mask = torch.ones(8, 3, 1, 1)
    mask[:4] = 0
    attach_mask(net[0], mask)
    r = count(net, (1, 3, 4, 4), convention="official", freebie=False)
    row = r.table.iloc[0]
    assert (row.numel, row.nonzeros, row.mask_nonzeros, row.mask_bits) == (24, 12, 12, 24)
    assert row.mults == 16 * 12  # H·W·nnz: the subclass is not a silent zero
    assert torch.count_nonzero(net[0].weight) == 12


def test_unsupported_functional_op_names_itself():
    class Tanh(nn.Module):
        def forward(self, x):
            return torch.tanh(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 1), Tanh())
    with pytest.raises(UnsupportedOpError, match=r"'tanh'.*register_op_cost"):
        count(net, (1, 3, 4, 4))
    with pytest.raises(UnsupportedOpError, match="gelu"):
        count(nn.Sequential(nn.Conv2d(3, 4, 1), nn.GELU()), (1, 3, 4, 4))


def test_register_op_cost_makes_it_countable():
    class Cube(nn.Module):
        def forward(self, x):
            return x * x * x

    register_op_cost("erf_toy", mults=5, adds=2)

    class Erfish(nn.Module):
        pass

    register_op_cost(Erfish, mults=3, adds=1, name="erfish")
    Erfish.forward = lambda self, x: torch.tanh(x)  # internals of a registered module are not traced
    r = count(nn.Sequential(nn.Conv2d(3, 4, 1), Erfish(), Cube()), (1, 3, 2, 2), convention="official", freebie=False)
    row = r.table[r.table.op == "erfish"].iloc[0]
    assert (row.mults, row.adds) == (48, 16)
    assert (r.table.kind == "tensor_mul").sum() == 2  # x * x * x: two element-wise products


def test_leaf_with_hidden_parameters_errors():
    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return x  # the parameter is stored but invisible to the tracer

    with pytest.raises(UnsupportedOpError, match=r"w \(Opaque\)"):
        count(nn.Sequential(nn.Conv2d(3, 3, 1), Opaque()), (1, 3, 2, 2))

    class MatMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 2))

        def forward(self, x):
            return x @ self.w

    # x @ w is now counted from its shapes (issue #31): (1, 3, 2, 2) @ (2, 2) -> 3·2·2 outputs of k = 2 terms:
    # 2 mults + 1 add each; w is an operand parameter, stored dense (4 values).
    r = count(nn.Sequential(nn.Conv2d(3, 3, 1), MatMul()), (1, 3, 2, 2), convention="official", freebie=False)
    row = r.table[r.table.kind == "matmul"].iloc[0]
    assert (row.mults, row.adds, row.params) == (24, 12, 4)


def test_caller_model_state_unchanged():
    net = Residual().train()
    net.bn.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    count(net, (2, 4, 8, 8))
    assert net.training and not net.bn.training and net.conv.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_batch_size_does_not_change_per_example_counts():
    one = count(Residual(), (1, 4, 8, 8)).summary
    four = count(Residual(), (4, 4, 8, 8)).summary
    assert (one["adds"], one["mults"], one["params"]) == (four["adds"], four["mults"], four["params"])


def test_shared_weights_stored_once():
    conv = nn.Conv2d(2, 2, 1, bias=False)
    r = count(nn.Sequential(conv, conv), (1, 2, 2, 2), convention="official", freebie=False)
    assert r.summary["params"] == 6 and r.summary["mults"] == 2 * 16


def test_convention_registry():
    assert {"kaist", "official"} <= set(list_conventions())
    with pytest.raises(ValueError, match="allowed: .*kaist"):
        count(Residual(), (1, 4, 8, 8), convention="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_convention("kaist")(Convention)
    with pytest.raises(ValueError, match="layout"):
        count(Residual(), (1, 4, 8, 8), layout="nope")
