"""Post-training quantisation of a released checkpoint: masks kept, widths declared, scored by the rules."""

import pytest
import torch
import torch.nn as nn

from micronet_lib.models import build_model
from micronet_lib.models.checkpoints import load_checkpoint
from micronet_lib.quantize import ChannelScale, agreement, quantize_model, score_quantized
from micronet_lib.scoring import count


def _calibration(n=8):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_batchnorm_folds_exactly_into_channel_scales():
    torch.manual_seed(0)
    net = build_model("micronet_v1").eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
    q = quantize_model(net, weight_bits=8, act_bits=8, calibration=_calibration())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    assert sum(isinstance(m, ChannelScale) for m in q.modules()) == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = _calibration(4)
    same, n = agreement(net, net, x)
    assert (same, n) == (4, 4)
    with torch.no_grad():  # 8-bit weights and activations: close to the fp32 logits
        ref, out = net(x), q(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("bits", [6, 4])
def test_released_checkpoint_quantised_keeps_masks_and_scores_by_hand(asset, bits):
    net = load_checkpoint(asset("micronet_v1_pr_60.t7"))
    q = quantize_model(net, weight_bits=bits, act_bits=8, calibration=_calibration())
    layers = {n: m for n, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    orig = dict(net.named_modules())
    weight_values = bias_values = 0
    for name, m in layers.items():
        assert bool((m.weight[orig[name].weight == 0] == 0).all())  # pruned zeros stay exact zeros
        # (small weights may round to new zeros: they are counted as zeros, docs/scoring.md §5.1)
        assert torch.equal(m.mask, orig[name].mask)
        levels = max(len(torch.unique(row[row != 0])) for row in m.weight.flatten(1))
        assert levels <= 2 ** bits - 2  # symmetric per-channel grid without 0: at most 2^b − 2 values
        weight_values += int(torch.count_nonzero(m.weight))
        bias_values += m.bias.numel() if m.bias is not None else 0
    scale_values = sum(2 * m.weight.numel() for m in q.modules() if isinstance(m, ChannelScale))
    mask_bits = sum(m.weight.numel() for m in layers.values() if int(torch.count_nonzero(m.weight)) < m.weight.numel())
    r = score_quantized(q)
    # docs/scoring.md §2.2: b-bit weights count b/32; biases and channel scales stay 32-bit; 1 mask bit per element.
    assert r.exact["params_s"] == weight_values * bits / 32 + bias_values + scale_values + mask_bits / 32
    assert not r.summary["freebie"]
    t = r.table.set_index("path")
    assert tuple(t.loc["layers.0.conv1", ["param_bits", "act_bits", "mult_bits", "add_bits"]]) == (bits, 8, 8, 32)
    assert t.loc["layers.0.bn1", "op"] == "channel_scale" and t.loc["layers.0.bn1", "mult_bits"] == 32
    # Ops: the same graph as fp32 with the BN adds moved into the channel scales, multiplies re-priced.
    # Weights that rounded to zero drop their ops in both, so compare with the fp32 graph holding q's weights.
    same_weights = load_checkpoint(asset("micronet_v1_pr_60.t7"))
    with torch.no_grad():
        for name, m in layers.items():
            orig_m = dict(same_weights.named_modules())[name]
            orig_m.weight.copy_(m.weight)
    fp32 = count(same_weights, convention="official", freebie=False).exact
    assert r.exact["adds"] == fp32["adds"] and r.exact["mults"] - fp32["mults"] == t[t.op == "channel_scale"].mults.sum()
    assert r.exact["ops_s"] < fp32["ops_s"]
    assert not count(net, convention="kaist").summary.get("freebie_forfeited")  # the caller's model untouched


def test_bad_widths_and_calibration():
    net = build_model("micronet_v1")
    with pytest.raises(ValueError, match="weight_bits=1 must be an integer in"):
        quantize_model(net, weight_bits=1, calibration=_calibration())
    with pytest.raises(ValueError, match="calibration must be normalised float images"):
        quantize_model(net, weight_bits=4, calibration=torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
