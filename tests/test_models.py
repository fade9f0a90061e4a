"""MicroNet architecture (docs/method.md §3): shapes, parameter counts, keys, stride-2 modes, init, registry."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_lib.models import HSwish, MicroBlock, SqueezeExcite, build_model, list_models, weight_group
from micronet_lib.models.micronet import STAGES, MicroNetConfig, StageConfig, block_widths, scale_depth, scale_width

# docs/method.md §3.4
TOTALS = {
    "micronet_v1": dict(excl_bn=451_758, trainable=464_918, prunable=450_456, biases=1_302, bn_affine=13_160, dead_se=6_534),
    "micronet_v2": dict(excl_bn=472_626, trainable=485_330, prunable=471_184, biases=1_442, bn_affine=12_704, dead_se=7_975),
}
# docs/method.md §3.3: (C_in, C_out, E, stride, SE H, block total excl. BN, BN affine) per block.
_V1 = [(32, 16, 96, 1, 4, 6_132, 448), (16, 16, 48, 1, 4, 2_116, 224), (16, 32, 48, 2, 8, 3_288, 256),
       (32, 32, 96, 1, 8, 7_560, 448), (32, 48, 96, 1, 12, 11_292, 576)] + [(48, 48, 144, 1, 12, 16_332, 672)] * 2 + [
       (48, 72, 144, 2, 18, 21_258, 720)] + [(72, 72, 216, 1, 18, 35_730, 1_008)] * 4 + [
       (72, 80, 216, 2, 20, 38_076, 1_024), (80, 88, 240, 1, 22, 53_502, 1_312), (88, 88, 264, 1, 22, 52_822, 1_232),
       (88, 106, 264, 1, 26, 68_564, 1_480)]
_V2 = [(32, 20, 80, 1, 5, 5_745, 400), (20, 20, 50, 1, 5, 2_675, 240), (20, 36, 50, 2, 9, 3_943, 272),
       (36, 36, 90, 1, 9, 7_983, 432), (36, 56, 90, 1, 14, 12_744, 584)] + [(56, 56, 140, 1, 14, 18_578, 672)] * 2 + [
       (56, 80, 140, 2, 20, 23_600, 720)] + [(80, 80, 200, 1, 20, 37_100, 960)] * 4 + [
       (80, 88, 200, 2, 22, 39_382, 976), (88, 96, 220, 1, 24, 55_636, 1_264), (96, 96, 240, 1, 24, 52_968, 1_152),
       (96, 114, 240, 1, 28, 70_030, 1_416)]
BLOCKS = {"micronet_v1": _V1, "micronet_v2": _V2}
# docs/method.md §4.5 "numel" columns: weights (ndim > 1) per group.
GROUP_NUMEL = {
    "micronet_v1": dict(stem=864, expand=174_912, depthwise=23_976, project=187_536, shortcut=18_416,
                        se_fc1=17_076, se_fc2=17_076, classifier=10_600),
    "micronet_v2": dict(stem=864, expand=180_000, depthwise=22_320, project=192_680, shortcut=22_048,
                        se_fc1=20_936, se_fc2=20_936, classifier=11_400),
}
SHORTCUT_BLOCKS = {0, 4, 13, 15}  # docs/method.md §3.2
STRIDE2_BLOCKS = {2, 7, 12}
INIT_STD_RTOL = 0.05  # sample std of ≥ 20k draws is within ~1 % of the true std; 5 % leaves margin
VERSIONS = ("micronet_v1", "micronet_v2")


def _split_bn(module: nn.Module) -> tuple[int, int]:
    """(parameters outside BatchNorm, BatchNorm affine parameters) of ``module``."""
    bn = {id(p) for m in module.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    params = list(module.parameters())
    return sum(p.numel() for p in params if id(p) not in bn), sum(p.numel() for p in params if id(p) in bn)


@pytest.fixture(scope="module", params=VERSIONS)
def net(request):
    torch.manual_seed(0)
    return request.param, build_model(request.param)


def test_registry_lists_micronets_and_rejects_unknown_names():
    assert {"micronet_v1", "micronet_v2"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'micronet_v3'.*micronet_v1"):
        build_model("micronet_v3")


def test_builders_are_keyword_only():
    from micronet_lib.models.micronet import micronet_v1

    with pytest.raises(TypeError):
        micronet_v1(100)


def test_parameter_totals(net):
    name, model = net
    want = TOTALS[name]
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == want["trainable"]
    assert _split_bn(model) == (want["excl_bn"], want["bn_affine"])
    assert sum(p.numel() for p in params.values() if p.ndim > 1) == want["prunable"]
    assert want["excl_bn"] - want["prunable"] == want["biases"]
    dead = sum(p.numel() for i in STRIDE2_BLOCKS for p in list(model.layers[i].fc1.parameters()) + list(model.layers[i].fc2.parameters()))
    assert dead == want["dead_se"]


def test_per_block_table(net):
    """Every row of the docs/method.md §3.3 block tables: widths, stride, shortcut, parameter counts."""
    name, model = net
    assert len(model.layers) == 16
    for i, (block, row) in enumerate(zip(model.layers, BLOCKS[name])):
        c_in, c_out, e, s, h, total, bn = row
        assert (block.in_ch, block.out_ch, block.expanded, block.stride, block.se_hidden) == (c_in, c_out, e, s, h), i
        assert _split_bn(block) == (total, bn), i
        assert isinstance(block.shortcut, nn.Sequential) == (i in SHORTCUT_BLOCKS), i
        assert block.has_residual == (i not in STRIDE2_BLOCKS)
        assert block.se_applied == (i not in STRIDE2_BLOCKS)


def test_state_dict_keys_reproduce_released_layout(net):
    """docs/method.md §4.3: 384 non-mask entries (470 − 86 masks); shortcut keys only in blocks 0, 4, 13, 15."""
    _, model = net
    keys = list(model.state_dict())
    assert len(keys) == 470 - 86
    shortcut_blocks = {int(k.split(".")[1]) for k in keys if ".shortcut." in k}
    assert shortcut_blocks == SHORTCUT_BLOCKS
    assert keys[:2] == ["conv1.weight", "bn1.weight"] and keys[-2:] == ["linear.weight", "linear.bias"]
    block0 = [k.split(".", 2)[2] for k in keys if k.startswith("layers.0.")]
    order = [k.split(".")[0] if not k.startswith("shortcut") else "shortcut" for k in block0]
    assert list(dict.fromkeys(order)) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "shortcut", "fc1", "fc2"]


def test_sixty_eight_pointwise_convs(net):
    _, model = net
    one_by_one = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 68
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 16 and all(m.kernel_size == (3, 3) for m in depthwise)


def test_forward_shapes_and_resolution_drops(net):
    _, model = net
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for b in model.layers]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 100)
    assert sizes == [32, 32] + [16] * 5 + [8] * 5 + [4] * 4


def test_components_and_hyperparameters(net):
    _, model = net
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-5 and m.affine for m in bns)
    assert model.dropout.p == 0.3
    assert all(b.fc1.bias is not None and b.fc2.bias is not None for b in model.layers)
    assert all(isinstance(b.se, SqueezeExcite) for b in model.layers)


def test_hswish_matches_definition():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(HSwish()(x), x * F.relu6(x + 3) / 6, rtol=0, atol=1e-6)


def test_initialisation_follows_paper():
    """docs/method.md §3.5: conv ~ N(0, 2/(k²·C_out)), conv bias 0, BN 1/0, linear N(0, 0.01²) with bias 0."""
    torch.manual_seed(1)
    model = build_model("micronet_v1")
    big = model.layers[15].conv3.weight  # 106×264 = 27,984 draws
    assert big.std().item() == pytest.approx(math.sqrt(2 / 106), rel=INIT_STD_RTOL)
    dw = torch.cat([b.conv2.weight.flatten() for b in model.layers[8:12]])  # E = 216, k = 3
    assert dw.std().item() == pytest.approx(math.sqrt(2 / (9 * 216)), rel=INIT_STD_RTOL)
    assert model.linear.weight.std().item() == pytest.approx(0.01, rel=INIT_STD_RTOL)
    assert torch.count_nonzero(model.linear.bias) == 0
    assert all(torch.count_nonzero(b.fc1.bias) == 0 and torch.count_nonzero(b.fc2.bias) == 0 for b in model.layers)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("mode", ["discard", "skip", "apply"])
def test_stride2_se_modes(mode):
    """docs/method.md §3.1: discard computes the dead gate, skip does not, apply scales the output; same keys."""
    torch.manual_seed(0)
    ref = build_model("micronet_v2").eval()
    torch.manual_seed(0)
    model = build_model("micronet_v2", stride2_se=mode).eval()
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict())
    with torch.no_grad():  # nonzero SE biases so that an applied gate is visibly not 0.5
        for b in model.layers:
            b.fc2.bias.normal_()
    calls = []
    model.layers[2].fc1.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = model.forward_features(x)  # features, not logits: the N(0, 0.01²) head shrinks differences
        ref.load_state_dict(model.state_dict())
        base = ref.forward_features(x)
    assert len(calls) == (0 if mode == "skip" else 1)
    assert model.layers[2].se_applied == (mode == "apply")
    assert not model.layers[2].has_residual
    if mode == "apply":
        assert (out - base).abs().max() > 0.1 * base.abs().max()
    else:
        torch.testing.assert_close(out, base, rtol=0, atol=0)


def test_dead_se_gets_no_gradient_but_applied_se_does():
    torch.manual_seed(0)
    for mode, expect_grad in (("discard", False), ("apply", True)):
        model = build_model("micronet_v1", stride2_se=mode).train()
        model(torch.randn(2, 3, 16, 16)).sum().backward()  # 16×16 is enough to reach every block
        g = model.layers[7].fc2.weight.grad
        has = g is not None and bool(torch.count_nonzero(g))
        assert has == expect_grad, mode
        assert bool(torch.count_nonzero(model.layers[8].fc2.weight.grad))


def test_deepcopy_keeps_se_bound_to_the_copied_convs():
    model = build_model("micronet_v2").eval()
    clone = copy.deepcopy(model)
    assert clone.layers[3].se._fcs[0] is clone.layers[3].fc1
    with torch.no_grad():
        clone.layers[3].fc2.bias.fill_(5.0)
        x = torch.randn(1, 3, 16, 16)
        assert (clone(x) - model(x)).abs().max() > 0
    assert torch.count_nonzero(model.layers[3].fc2.bias) == 0


def test_width_and_depth_multipliers():
    model = build_model("micronet_v1", width_mult=0.5, depth_mult=2.0, num_classes=10).eval()
    assert model.conv1.out_channels == 16
    assert len(model.layers) == 32
    assert model.layers[0].out_ch == scale_width(16, 0.5) == 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert scale_depth(3, 1.0) == 3 and scale_width(106, 1.0) == 106


def test_width_arithmetic_is_exact():
    assert block_widths(36, 56, 2.5) == (90, 14)
    assert block_widths(88, 106, 3) == (264, 26)
    assert block_widths(20, 36, 2.5) == (50, 9)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(stride2_se="drop"), "stride2_se"),
        (dict(width_mult=0), "width_mult"),
        (dict(depth_mult=-1), "depth_mult"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(bn_momentum=0), "bn_momentum"),
    ],
)
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        build_model("micronet_v2", **options)


def test_config_validation():
    with pytest.raises(ValueError, match="version"):
        MicroNetConfig(version="ver3")
    with pytest.raises(ValueError, match="stride"):
        StageConfig(3, 16, 1, 3)
    with pytest.raises(ValueError, match="stride"):
        MicroBlock(16, 16, expanded=48, se_hidden=4, stride=3)
    assert len(STAGES["ver1"]) == len(STAGES["ver2"]) == 9


def test_weight_groups_cover_every_weight(net):
    """Group numel equals docs/method.md §4.5's ``numel`` column; every parameter has a group."""
    name, model = net
    numel: dict[str, int] = {}
    for pname, p in model.named_parameters():
        group = weight_group(pname)
        if p.ndim > 1:
            numel[group] = numel.get(group, 0) + p.numel()
        else:
            assert group in ("bn", "se_fc1", "se_fc2", "classifier"), pname
    assert numel == GROUP_NUMEL[name]
    assert weight_group("layers.4.shortcut.0") == "shortcut"
    assert weight_group("_orig_mod.layers.4.conv1.mask") == "expand"
    assert weight_group("conv1") == "stem"
    with pytest.raises(ValueError, match="not a MicroNet weight"):
        weight_group("features.0.weight")


def test_mobilenetv2_cifar_baseline():
    """Only strides differ from the ImageNet network, so the parameter count equals torchvision's."""
    import torchvision

    model = build_model("mobilenetv2_cifar", num_classes=100).eval()
    reference = torchvision.models.mobilenet_v2(num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    half = build_model("mobilenetv2_cifar", num_classes=10, width_mult=0.5)
    half_ref = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
    assert sum(p.numel() for p in half.parameters()) == sum(p.numel() for p in half_ref.parameters())
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mobilenetv2_cifar", num_classes=0)
