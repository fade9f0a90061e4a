"""Fixed op layouts: how the challenge counted a network, independent of how its forward is coded.

WideResNet-28-10 is the normaliser (docs/scoring.md §7.2). The organisers' count is not a trace of the
pre-activation forward: every conv gets a (folded-BN) bias, a ReLU follows every 3×3 conv including
the stem (not the 1×1 shortcuts), an Add follows each of the 12 blocks, then GlobalAvg(8, 640) and
FullyConnected(640→100). Two layouts exist:

* ``wrn_standard``: the first 3×3 conv of the first block of groups 2 and 3 has stride 2
  → 36,529,028 params, 10,490,270,720 ops (fp32, dense, official);
* ``wrn_astar``: that conv runs at stride 1 and the *second* conv has stride 2 (A*STAR's notebook)
  → 11,906,216,960 ops.

Use ``count(model, layout="wrn_standard", convention="official", freebie=False)``. Densities come
from the model's actual weights, so a pruned WRN is scored with the same layout.
"""

from __future__ import annotations

from micronet_lib.scoring.ops import ACTIVATION_COSTS, output_size
from micronet_lib.scoring.records import OpRecord, param_stats
from micronet_lib.registry import Registry
from micronet_lib.models.wrn import WideResNet

__all__ = ["LAYOUTS", "list_layouts", "register_layout", "wrn_layout"]

#: Fixed op layouts ``fn(model, input_size) -> list[OpRecord]``, used by ``count(layout=...)`` instead of tracing.
LAYOUTS: Registry = Registry("layout")


def register_layout(name: str):
    """Register ``fn(model, input_size) -> list[OpRecord]``: a fixed op layout used instead of tracing."""
    return LAYOUTS.register(name)


def list_layouts() -> list[str]:
    """Names accepted by ``count(layout=...)`` (``None`` traces the forward instead)."""
    return LAYOUTS.names()

_RELU = tuple(map(int, ACTIVATION_COSTS["relu"]))


def _conv(stats, path, conv, h_in, stride) -> tuple[OpRecord, int]:
    k = conv.kernel_size[0]
    h = output_size(h_in, k, stride, "same")
    w = stats[f"{path}.weight"]
    rec = OpRecord(path, "conv", f"Conv2d {k}x{k}/s{stride} {conv.in_channels}->{conv.out_channels} (+bias)",
                   (conv.out_channels, h, h), weight=w, fan_in=w.numel // conv.out_channels,
                   out_channels=conv.out_channels, note="challenge layout: BN folded into a bias")
    return rec, h


def _relu(path, shape) -> OpRecord:
    return OpRecord(f"{path}:relu", "elementwise", "relu", shape, mults_per_element=_RELU[0], adds_per_element=_RELU[1],
                    note="challenge layout: relu after every 3x3 conv")


def wrn_layout(model, input_size, *, astar: bool = False) -> list[OpRecord]:
    """Records of the challenge's WRN count (docs/scoring.md §7.2) for a ``WideResNet``; see module docstring."""
    if not isinstance(model, WideResNet):
        raise ValueError(f"the WRN layouts need a micronet_lib.models.wrn.WideResNet, got {type(model).__name__}")
    if len(input_size) != 4 or input_size[2] != input_size[3]:
        raise ValueError(f"input_size={tuple(input_size)!r} must be (N, 3, H, H): the library counts square inputs")
    stats = param_stats(model)
    recs: list[OpRecord] = []
    rec, h = _conv(stats, "conv1", model.conv1, input_size[2], 1)
    recs += [rec, _relu("conv1", rec.out_shape)]
    for g, group in enumerate((model.block1, model.block2, model.block3), start=1):
        for i, block in enumerate(group):
            p = f"block{g}.{i}"
            s1, s2 = (1, block.stride) if astar else (block.stride, 1)
            r1, h1 = _conv(stats, f"{p}.conv1", block.conv1, h, s1)
            r2, h2 = _conv(stats, f"{p}.conv2", block.conv2, h1, s2)
            recs += [r1, _relu(f"{p}.conv1", r1.out_shape), r2, _relu(f"{p}.conv2", r2.out_shape)]
            if block.has_projection:
                rs, _ = _conv(stats, f"{p}.shortcut", block.shortcut, h, block.stride)
                recs.append(rs)
            recs.append(OpRecord(f"{p}:add", "tensor_add", "add (residual)", r2.out_shape))
            h = h2
    c = model.fc.in_features
    recs.append(OpRecord("pool", "avg_pool", f"GlobalAvgPool {h * h}->1", (c, 1, 1), window=h * h))
    w, b = stats["fc.weight"], stats.get("fc.bias")
    recs.append(OpRecord("fc", "linear", f"Linear {c}->{model.fc.out_features}", (model.fc.out_features,), weight=w,
                         bias=b, fan_in=c, out_channels=model.fc.out_features))
    return recs


@register_layout("wrn_standard")
def _wrn_standard(model, input_size):
    return wrn_layout(model, input_size, astar=False)


@register_layout("wrn_astar")
def _wrn_astar(model, input_size):
    return wrn_layout(model, input_size, astar=True)
