"""Counting conventions: how each traced op is charged (docs/scoring.md §5).

A convention turns one :class:`~micronet_lib.scoring.trace.OpRecord` into raw counts (parameter
values, multiplies, adds) and decides the mask storage. Two are registered:

``official`` (docs/scoring.md §5.3): the counting library read strictly. Every conv/FC is charged
C_out bias values and one bias add per output (BN folded, §3.4); GlobalAvg is C mults + (H²−1)·C
adds; FC adds are vl·C_out (bias add included); an SE gate multiply (``Scale``) and a residual
``Add`` are charged where the forward pass executes them; a 1-bit-per-element mask is stored for
each weight tensor that has at least one exact zero.

``kaist`` (docs/scoring.md §5.2): the authors' revised counter, reproduced exactly, omissions included:
the tensor⊙tensor gate multiply and the tensor+tensor residual add written in the forward of the
authors' blocks (``kaist_blocks()``, by class identity) are *not* counted (the same ops elsewhere are); a
global pool costs H·W adds + 1 mult per channel; the classifier costs (C_in−1)·out·d adds (no bias
add) and stores nnz(bias) values; the mask is B/32 with B the numel of *all* ndim>1 weights,
charged whenever any weight has an exact zero (none for a fully dense model).

Both: density d from exact zeros (never from a mask); convs cost n·K·d adds and mults and store
nnz(W) + C_out values; BN, dropout, identity free; activations per ``ops.ACTIVATION_COSTS``.

Differences are visible in the per-layer table: rows a convention does not charge carry a note.

Bias (``OpRecord.bias_charged``, set by the bias policy of ``count``): by default every conv/FC is charged
C_out bias values and one add per output (the rules' folded BN, §3.4 -- both conventions); a record
without a charged bias costs (vl − 1)·n adds and nnz(W) values. A registered module (kind ``module``)
stores its declared parameters dense and costs its declared mults/adds per output element.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Sequence

from micronet_lib.models.blocks import MicroBlock, SqueezeExcite
from micronet_lib.registry import Registry
from micronet_lib.scoring.records import OpRecord

__all__ = ["CONVENTIONS", "OPERAND_KINDS", "kaist_blocks", "Cost", "Convention", "register_convention", "get_convention", "list_conventions"]


@dataclass(frozen=True)
class Cost:
    """Raw counts of one record: parameter values (before bit scaling), mults, adds, and why."""

    values: Fraction = Fraction(0)
    mults: Fraction = Fraction(0)
    adds: Fraction = Fraction(0)
    note: str = ""
    bias_values: Fraction = Fraction(0)  # the part of ``values`` that is bias (may have its own bit width)


class Convention:
    """Base = the official library semantics; subclasses override single ops."""

    name = "official"
    description = "strict reading of the official counting library (docs/scoring.md §5.3)"

    def cost(self, r: OpRecord) -> Cost:
        handler = getattr(self, f"cost_{r.kind}", None)
        if handler is None:
            raise ValueError(f"convention {self.name!r} has no rule for op kind {r.kind!r} ({r.path})")
        c = handler(r)
        if r.kind in OPERAND_KINDS and r.params and r.owns_params:
            # A parameter used directly as an operand (a layer scale, a position embedding, x @ W) is
            # stored dense: numel values at the layer's param width.
            c = replace(c, values=c.values + sum(p.numel for p in r.params))
        return c

    # -- weighted ops ------------------------------------------------------------------------------
    @staticmethod
    def _bias(r: OpRecord, values: int) -> tuple[Fraction, Fraction]:
        """(all values, bias values) stored by a weighted record."""
        if not r.owns_params:
            return Fraction(0), Fraction(0)
        return Fraction(r.weight.nnz + values), Fraction(values)

    def cost_conv(self, r: OpRecord) -> Cost:
        # n·K·d mults; (vl−1)·n + n adds = n·K·d: the +n is the (folded-BN) bias add (docs/scoring.md §3.3, §5.2).
        per_out = Fraction(r.weight.nnz, r.out_channels)  # K·d = K·nnz/(K·C_out)
        ops = per_out * r.n_out
        values, bias = self._bias(r, r.out_channels if r.bias_charged else 0)
        adds = ops if r.bias_charged else ops - r.n_out
        return Cost(values, ops, adds, "" if r.bias_charged else "no bias (bias policy)", bias)

    def cost_linear(self, r: OpRecord) -> Cost:
        return self.cost_conv(r)  # vl = C_in·d: the same formula (docs/scoring.md §3.3)

    def cost_module(self, r: OpRecord) -> Cost:
        values = Fraction(sum(p.numel for p in r.params)) if r.owns_params else Fraction(0)
        return Cost(values, r.mults_per_element * r.n_out, r.adds_per_element * r.n_out,
                    "declared parameters stored dense")

    def cost_stored(self, r: OpRecord) -> Cost:
        return Cost()  # the declared values are added by cost() (OPERAND_KINDS)

    def cost_matmul(self, r: OpRecord) -> Cost:
        # k mults and k − 1 adds per output: FullyConnected without a bias (docs/scoring.md "Attention and matmul").
        return Cost(mults=Fraction(r.fan_in * r.n_out), adds=Fraction((r.fan_in - 1) * r.n_out))

    def cost_softmax(self, r: OpRecord) -> Cost:
        # exp and divide per element (2 mults); the row sum: window − 1 adds per row of ``window`` elements.
        return Cost(mults=Fraction(2 * r.n_out), adds=Fraction((r.window - 1) * r.n_out, r.window))

    # -- parameter-free ops ------------------------------------------------------------------------
    def cost_avg_pool(self, r: OpRecord) -> Cost:
        return Cost(mults=Fraction(r.n_out), adds=Fraction((r.window - 1) * r.n_out))

    def cost_max_pool(self, r: OpRecord) -> Cost:
        return Cost(mults=Fraction((r.window - 1) * r.n_out), note="comparisons as mults (docs/scoring.md §4)")

    def cost_tensor_mul(self, r: OpRecord) -> Cost:
        return Cost(mults=Fraction(r.n_out), note="Scale (docs/scoring.md §3.3)")

    def cost_tensor_add(self, r: OpRecord) -> Cost:
        return Cost(adds=Fraction(r.n_out), note="Add (docs/scoring.md §3.3)")

    def cost_elementwise(self, r: OpRecord) -> Cost:
        return Cost(mults=r.mults_per_element * r.n_out, adds=r.adds_per_element * r.n_out)

    def cost_upsample(self, r: OpRecord) -> Cost:
        return Cost(mults=Fraction(r.n_out), note="nearest upsample: 1 mult per output (docs/scoring.md §4)")

    def cost_free(self, r: OpRecord) -> Cost:
        return Cost()

    # -- mask storage ------------------------------------------------------------------------------
    def mask_bits(self, records: Sequence[OpRecord]) -> list[int]:
        """Per record: 1 bit per element of each weight tensor with an exact zero (docs/scoring.md §5.3)."""
        return [r.weight.numel if (r.weight is not None and r.owns_params and r.weight.nnz < r.weight.numel) else 0
                for r in records]


#: Record kinds whose ``params`` are operands (stored dense); a module/free record charges or folds its own.
OPERAND_KINDS = frozenset({"tensor_mul", "tensor_add", "elementwise", "matmul", "stored"})

#: One instance of each registered :class:`Convention` subclass.
CONVENTIONS: Registry[Convention] = Registry("convention")


def register_convention(name: str | None = None) -> Callable[[type], type]:
    """Class decorator: register an instance of a :class:`Convention` subclass. Duplicates raise."""

    def wrap(cls: type) -> type:
        inst = cls()
        inst.name = name or cls.name
        CONVENTIONS.add(inst.name, inst)
        return cls

    return wrap


def list_conventions() -> list[str]:
    """Names accepted wherever a ``convention=`` is taken."""
    return CONVENTIONS.names()


def get_convention(name: str | Convention) -> Convention:
    """The registered convention ``name`` (a :class:`Convention` instance passes through)."""
    if isinstance(name, Convention):
        return name
    return CONVENTIONS.get(name)


@register_convention("official")
class Official(Convention):
    pass


# The authors' counter hooked modules only, so it never saw the tensor-tensor ops written in the forward of
# their blocks: the SE gate (in SqueezeExcite) and the residual add (in MicroBlock) (docs/scoring.md §5.2). The
# kaist convention omits exactly those, matched by class identity (a third-party class that happens to be
# called SqueezeExcite is charged); the same ops in any other module are charged as in 'official'.
def kaist_blocks() -> frozenset[type]:
    """The project's MicroNet block classes whose tensor-tensor ops the authors' counter did not see."""
    return frozenset({MicroBlock, SqueezeExcite})


@register_convention("kaist")
class Kaist(Convention):
    description = "the authors' revised counter, their omissions included (docs/scoring.md §5.2, docs/method.md §9)"

    def cost_linear(self, r: OpRecord) -> Cost:
        # (C_in − 1)·out·d adds, no bias add; C_in·out·d mults; nnz(W) + nnz(b) values (docs/scoring.md §5.2).
        d = Fraction(r.weight.nnz, r.weight.numel)
        rows = Fraction(r.n_out, r.out_channels)
        bias_nnz = r.bias.nnz if r.bias is not None else 0
        values, bias = self._bias(r, bias_nnz)
        return Cost(values, r.fan_in * r.out_channels * d * rows, (r.fan_in - 1) * r.out_channels * d * rows,
                    note="kaist FC: (C_in-1)*out*d adds, nnz(b) values", bias_values=bias)

    def cost_avg_pool(self, r: OpRecord) -> Cost:
        return Cost(mults=Fraction(r.n_out), adds=Fraction(r.window * r.n_out), note="kaist pool: H*W adds per channel")

    def cost_tensor_mul(self, r: OpRecord) -> Cost:
        if r.owner_type not in kaist_blocks():
            # Only the authors' own gate is their omission; any other product, e.g. a hand-written swish
            # x * sigmoid(x), is charged, so it costs what F.silu costs (§3.2).
            return super().cost_tensor_mul(r)
        return Cost(note="not counted in kaist (the authors' counter never saw the SE gate multiply)")

    def cost_tensor_add(self, r: OpRecord) -> Cost:
        if r.owner_type not in kaist_blocks():
            return super().cost_tensor_add(r)
        return Cost(note="not counted in kaist (the authors' counter never saw residual adds)")

    def mask_bits(self, records: Sequence[OpRecord]) -> list[int]:
        # B = numel of all ndim > 1 weights, charged once any of them has an exact zero (docs/scoring.md §5.2).
        weighted = [r.weight is not None and r.owns_params for r in records]
        any_zero = any(w and r.weight.nnz < r.weight.numel for w, r in zip(weighted, records))
        return [r.weight.numel if (w and any_zero) else 0 for w, r in zip(weighted, records)]
