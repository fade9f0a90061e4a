"""WideResNet-28-10 (docs/scoring.md §7.2): architecture, parameter count, the normaliser's counts."""

import pytest
import torch
import torch.nn as nn

import micronet_lib.models.wrn  # noqa: F401  (registers wrn28_10)
from micronet_lib.models import build_model, list_models
from micronet_lib.models.wrn import WRNConfig
from micronet_lib.scoring import OPS_NORMALIZER, PARAMS_NORMALIZER, WRN28_10_OPS, WRN28_10_PARAMS, count

SCORE_6DP = 5e-7  # §7.2 prints scores to 6 decimals


@pytest.fixture(scope="module")
def wrn():
    torch.manual_seed(0)
    return build_model("wrn28_10").eval()


def test_registered_and_validated():
    assert "wrn28_10" in list_models()
    with pytest.raises(ValueError, match="depth=27"):
        WRNConfig(depth=27)
    with pytest.raises(ValueError, match="widen"):
        WRNConfig(widen=0)


def test_parameter_breakdown(wrn):
    conv = sum(m.weight.numel() for m in wrn.modules() if isinstance(m, nn.Conv2d))
    bn = sum(p.numel() for m in wrn.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    fc = sum(p.numel() for p in wrn.fc.parameters())
    assert (conv, fc, bn) == (36_454_832, 64_100, 17_952)
    assert sum(p.numel() for p in wrn.parameters()) == 36_536_884
    assert all(m.bias is None for m in wrn.modules() if isinstance(m, nn.Conv2d))
    shortcuts = [m.shortcut for g in (wrn.block1, wrn.block2, wrn.block3) for m in g if m.has_projection]
    assert [(s.in_channels, s.out_channels, s.stride[0]) for s in shortcuts] == [(16, 160, 1), (160, 320, 2), (320, 640, 2)]


def test_forward_shape_on_meta():
    with torch.device("meta"):
        net = build_model("wrn28_10", num_classes=7)
        out = net(torch.zeros(2, 3, 32, 32))
    assert tuple(out.shape) == (2, 7)


def test_standard_layout_is_the_normaliser(wrn):
    s = count(wrn, layout="wrn_standard", convention="official", freebie=False).summary
    assert (s["params"], s["mask_bits"]) == (WRN28_10_PARAMS, 0) == (36_529_028, 0)
    assert (s["mults"], s["adds"]) == (5_245_697_152, 5_244_573_568)
    assert s["ops_s"] == WRN28_10_OPS == 10_490_270_720
    assert s["score"] == pytest.approx(2.000821, abs=SCORE_6DP)
    assert round(WRN28_10_PARAMS, -5) == PARAMS_NORMALIZER and round(WRN28_10_OPS, -7) == OPS_NORMALIZER


def test_standard_layout_with_freebie(wrn):
    s = count(wrn, layout="wrn_standard", convention="official").summary
    assert (s["params_s"], s["ops_s"]) == (18_264_514, 7_867_422_144)
    assert s["score"] == pytest.approx(1.250390, abs=SCORE_6DP)


def test_astar_layout(wrn):
    s = count(wrn, layout="wrn_astar", convention="official", freebie=False).summary
    assert (s["params"], s["mults"], s["adds"]) == (36_529_028, 5_953_854_592, 5_952_362_368)
    assert s["ops_s"] == 11_906_216_960


def test_traced_preactivation_forward_agrees(wrn):
    """The traced pre-activation forward charges the same ReLU elements and adds as the layout."""
    s = count(wrn, convention="official", freebie=False).summary
    assert (s["params"], s["ops_s"]) == (36_529_028, 10_490_270_720)


def test_layout_rejects_other_models():
    with pytest.raises(ValueError, match="WideResNet"):
        count(nn.Sequential(nn.Conv2d(3, 3, 1)), layout="wrn_standard")
