"""The official MicroNet Challenge counting formulas, one function per library op (docs/scoring.md §3).

These are the per-op formulas of google-research ``micronet_challenge/counting.py`` re-derived from
docs/scoring.md §3.3 (no code copied). Every function returns :class:`OpCount` with **raw** counts:
parameter *bits*, multiplies and adds, before any 16-bit scaling of the ops. Arithmetic is exact:
sparsities are taken as :class:`fractions.Fraction` (a float is converted through its decimal
string, so ``0.25`` is exactly 1/4), and results are ints or Fractions.

The challenge parameter count is ``param_bits / 32`` (docs/scoring.md §3.3 "Units").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

__all__ = [
    "OpCount",
    "ACTIVATION_COSTS",
    "activation_cost",
    "output_size",
    "conv2d",
    "depthwise_conv2d",
    "global_avg",
    "scale",
    "add",
    "fully_connected",
    "as_fraction",
]

Number = Union[int, float, Fraction]

# Per output element (mults, adds). docs/scoring.md §3.2 defines relu, swish, sigmoid; §4 adds the
# conventions the library leaves open. ReLU6 = 2 comparisons counted as mults (KAIST, §4);
# hard-sigmoid = ReLU6(x + 3) / 6 = 2 + 1 (÷6) mults and 1 add (+3); hard-swish = x · hard-sigmoid(x)
# = 4 mults + 1 add (the verified KAIST convention, §4).
ACTIVATION_COSTS: dict[str, tuple[int, int]] = {
    "relu": (1, 0),
    "relu6": (2, 0),
    "hardsigmoid": (3, 1),
    "hswish": (4, 1),
    "sigmoid": (2, 1),
    "swish": (3, 1),
}
_ACTIVATION_ALIASES = {"hardswish": "hswish", "silu": "swish", "hard_sigmoid": "hardsigmoid", "h_swish": "hswish"}


@dataclass(frozen=True)
class OpCount:
    """Raw counts of one library op: parameter bits, multiplies, adds (docs/scoring.md §3.1 ``count_ops``)."""

    param_bits: Fraction
    mults: Fraction
    adds: Fraction

    @property
    def params(self) -> Fraction:
        """Parameters in 32-bit units (the challenge's parameter count)."""
        return self.param_bits / 32


def as_fraction(value: Number, field: str = "value") -> Fraction:
    """Exact rational of ``value``; floats go through ``repr`` so 0.1 is 1/10, not its binary expansion."""
    if isinstance(value, bool):
        raise ValueError(f"{field}={value!r} must be a number, not a bool")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field}={value!r} must be finite")
        return Fraction(repr(value))
    raise ValueError(f"{field}={value!r} must be an int, float or Fraction")


def activation_cost(activation: str | None) -> tuple[int, int]:
    """(mults, adds) per element; ``None``/falsy means no activation. Unknown names raise ``ValueError``."""
    if not activation:
        return (0, 0)
    key = _ACTIVATION_ALIASES.get(activation, activation)
    if key not in ACTIVATION_COSTS:
        raise ValueError(
            f"activation={activation!r} has no defined cost; known: {', '.join(sorted(ACTIVATION_COSTS))} "
            "(register others with micronet_lib.scoring.register_op_cost)"
        )
    return ACTIVATION_COSTS[key]


def output_size(input_size: int, kernel: int, stride: int, padding: str = "same") -> int:
    """H_out = ceil((H − k + 1 + 2·pad) / stride), pad = k//2 for 'same', 0 for 'valid' (docs/scoring.md §3.3)."""
    for field, value in (("input_size", input_size), ("kernel", kernel), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}={value!r} must be a positive integer")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding={padding!r} is not supported; allowed: 'same', 'valid'")
    pad = kernel // 2 if padding == "same" else 0
    span = input_size - kernel + 1 + 2 * pad
    if span < 1:
        raise ValueError(f"kernel={kernel} does not fit input_size={input_size} with padding={padding!r}")
    return -(-span // stride)


def _sparsity(sparsity: Number) -> Fraction:
    s = as_fraction(sparsity, "sparsity")
    if not 0 <= s < 1:
        raise ValueError(f"sparsity={sparsity!r} must be in [0, 1)")
    return s


def _bits(param_bits: int) -> int:
    if isinstance(param_bits, bool) or not isinstance(param_bits, int) or not 1 <= param_bits <= 32:
        raise ValueError(f"param_bits={param_bits!r} must be an integer in [1, 32]")
    return param_bits


def _weighted(numel: int, vl: Fraction, rows: int, c_out: int, s: Fraction, bits: int, use_bias: bool, activation) -> OpCount:
    """Shared formula of Conv2D / DepthWiseConv2D / FullyConnected (docs/scoring.md §3.3 table)."""
    a_m, a_a = activation_cost(activation)
    n_out = rows * c_out
    param_bits = numel * bits * (1 - s) + (numel if s > 0 else 0) + (c_out * bits if use_bias else 0)
    mults = vl * n_out + a_m * n_out
    adds = (vl - 1) * n_out + (n_out if use_bias else 0) + a_a * n_out
    return OpCount(Fraction(param_bits), Fraction(mults), Fraction(adds))


def conv2d(input_size: int, kernel: int, c_in: int, c_out: int, *, stride: int = 1, padding: str = "same",
           use_bias: bool = True, activation: str | None = None, sparsity: Number = 0, param_bits: int = 32) -> OpCount:
    """``Conv2D(input_size, [k, k, C_in, C_out], strides, padding, use_bias, activation)`` (docs/scoring.md §3.3)."""
    h = output_size(input_size, kernel, stride, padding)
    s, b = _sparsity(sparsity), _bits(param_bits)
    numel = kernel * kernel * c_in * c_out
    return _weighted(numel, kernel * kernel * c_in * (1 - s), h * h, c_out, s, b, use_bias, activation)


def depthwise_conv2d(input_size: int, kernel: int, channels: int, *, stride: int = 1, padding: str = "same",
                     use_bias: bool = True, activation: str | None = None, sparsity: Number = 0,
                     param_bits: int = 32) -> OpCount:
    """``DepthWiseConv2D(input_size, [k, k, C, 1], ...)``: vl = k²·(1−s) (docs/scoring.md §3.3)."""
    h = output_size(input_size, kernel, stride, padding)
    s, b = _sparsity(sparsity), _bits(param_bits)
    numel = kernel * kernel * channels
    return _weighted(numel, kernel * kernel * (1 - s), h * h, channels, s, b, use_bias, activation)


def fully_connected(c_in: int, c_out: int, *, use_bias: bool = True, activation: str | None = None,
                    sparsity: Number = 0, param_bits: int = 32) -> OpCount:
    """``FullyConnected([C_in, C_out], use_bias, activation)``: vl = C_in·(1−s) (docs/scoring.md §3.3)."""
    s, b = _sparsity(sparsity), _bits(param_bits)
    return _weighted(c_in * c_out, c_in * (1 - s), 1, c_out, s, b, use_bias, activation)


def global_avg(input_size: int, channels: int) -> OpCount:
    """``GlobalAvg(H, C)``: C divides (mults), (H² − 1)·C adds, no parameters (docs/scoring.md §3.3)."""
    return OpCount(Fraction(0), Fraction(channels), Fraction((input_size * input_size - 1) * channels))


def scale(input_size: int, channels: int) -> OpCount:
    """``Scale(H, C)``: H²·C mults, e.g. the SE gate (docs/scoring.md §3.3)."""
    return OpCount(Fraction(0), Fraction(input_size * input_size * channels), Fraction(0))


def add(input_size: int, channels: int) -> OpCount:
    """``Add(H, C)``: H²·C adds, e.g. a residual add (docs/scoring.md §3.3)."""
    return OpCount(Fraction(0), Fraction(0), Fraction(input_size * input_size * channels))
