"""Bit widths of each counted op: ints, ``{glob: bits}`` maps, ``"model"`` attributes, adder trees.

``param_bits``, ``act_bits``, ``accumulator_bits`` and ``bias_bits`` of :func:`micronet_lib.scoring.count`
resolve here, per record path. A glob map must set the width of at least one op (a typo is an error
naming the closest paths, never 32 bits by default). ``accumulator_bits="tree:N"`` charges the adds of
each sum at the average width of an adder tree that grows one bit per level (docs/scoring.md
"Accumulator width per adder-tree level").
"""

from __future__ import annotations

import difflib
import fnmatch
from fractions import Fraction
from typing import Mapping, Sequence, Union

import torch.nn as nn

from micronet_lib.scoring.records import OpRecord

__all__ = ["BitSpec", "BIT_ATTRIBUTES", "FROM_MODEL", "TREE", "bits_for", "check_bits", "check_patterns", "tree_width",
           "accumulator_width", "bits_from_model"]

BitSpec = Union[int, Mapping[str, int], str, None]
BIT_ATTRIBUTES = ("param_bits", "act_bits", "accumulator_bits", "bias_bits")
FROM_MODEL = "model"
TREE = "tree:"  # accumulator_bits="tree:8": per-level adder-tree widths (docs/scoring.md)


def _matches(path: str, pattern: str) -> bool:
    return path == pattern or fnmatch.fnmatchcase(path, pattern)


def bits_for(spec: BitSpec, path: str, what: str, default: int | None = 32):
    """Width of ``path`` under ``spec``: an int, ``{path or glob: bits}`` (first match wins), or None.
    ``accumulator_bits`` also takes ``"tree:N"`` (returned as the string; see :func:`tree_width`)."""
    if spec is None:
        return default
    if isinstance(spec, Mapping):
        for pattern, bits in spec.items():
            if _matches(path, pattern):
                return check_bits(bits, f"{what}[{pattern!r}]", tree=what == "accumulator_bits")
        return default
    if isinstance(spec, str) and not (what == "accumulator_bits" and spec.startswith(TREE)):
        raise ValueError(f"{what}={spec!r}: {FROM_MODEL!r} reads widths from the model's attributes and needs "
                         "count(model, ...); score_records takes an int or a {glob: bits} dict")
    return check_bits(spec, what, tree=what == "accumulator_bits")


def check_bits(bits, what, tree: bool = False):
    if tree and isinstance(bits, str) and bits.startswith(TREE):
        check_bits(int(bits[len(TREE):]) if bits[len(TREE):].isdigit() else None, what)
        return bits
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        hint = " or 'tree:N' (N-bit terms, one more bit per adder-tree level)" if tree else ""
        raise ValueError(f"{what}={bits!r} must be an integer bit width in [1, 32]{hint}")
    return bits


def check_patterns(spec, paths: Sequence[str], what: str) -> None:
    """Every glob of a ``{glob: bits}`` map must set the width of at least one op: a pattern that matches
    nothing (a typo) or only ops an earlier pattern already took (first match wins) is an error that
    lists the closest op paths."""
    if not isinstance(spec, Mapping):
        return
    taken: set[str] = set()
    for pattern in spec:
        hit = {p for p in paths if _matches(p, pattern)}
        if not hit:
            close = difflib.get_close_matches(pattern, sorted(set(paths)), n=5, cutoff=0.0)
            raise ValueError(f"{what}: pattern {pattern!r} matches no counted op, so its width would be ignored; "
                             f"closest op paths: {', '.join(close)}")
        if hit <= taken:
            raise ValueError(f"{what}: pattern {pattern!r} sets no width: every op it matches is taken by an earlier "
                             "pattern (first match wins); put it before them")
        taken |= hit


def tree_width(terms: int, base: int) -> Fraction:
    """Average width of the adds summing ``terms`` ``base``-bit terms in a balanced binary adder tree whose
    width grows one bit per level (docs/scoring.md "Accumulator width per adder-tree level").

    Level l (1, 2, ...) adds pairs of the m_l values left (m_1 = terms): floor(m_l / 2) adds of
    (base + l − 1)-bit inputs, capped at 32; an odd value left over moves up unchanged, m_{l+1} = ceil(m_l / 2).
    That is terms − 1 adds; a single add (two terms) is ``base`` bits."""
    total, adds, m, level = 0, 0, int(terms), 1
    while m > 1:
        pairs = m // 2
        total += pairs * min(base + level - 1, 32)
        adds += pairs
        m -= pairs
        level += 1
    return Fraction(total, adds) if adds else Fraction(base)


def _sum_terms(r: OpRecord) -> list[int]:
    """Terms of each sum the record's adds belong to: a weighted op's output channel sums its nonzero
    weights' products and its bias; a matmul/softmax/pool sums one row; anything else adds two values."""
    if r.kind in ("conv", "linear") and r.weight is not None and r.weight.row_nnz:
        return [n + int(r.bias_charged) for n in r.weight.row_nnz]
    if r.kind in ("matmul", "softmax") and r.terms:
        return [r.terms]
    if r.kind == "avg_pool" and r.window:
        return [r.window]
    return [2]


def accumulator_width(spec, r: OpRecord):
    """An int width, or the add-weighted average tree width of ``r`` for a ``"tree:N"`` spec."""
    if not (isinstance(spec, str) and spec.startswith(TREE)):
        return spec
    base = int(spec[len(TREE):])
    sums = _sum_terms(r)
    adds = sum(max(n - 1, 0) for n in sums)
    if not adds:
        return Fraction(base)
    return sum(max(n - 1, 0) * tree_width(n, base) for n in sums) / adds


def bits_from_model(model: nn.Module, records: Sequence[OpRecord], attribute: str) -> dict[str, int]:
    """``{record path: bits}`` read from ``attribute`` on the op's module or its nearest ancestor that has it.

    A quantised model declares its widths where they apply, e.g. ``conv.param_bits = 4`` or
    ``block.act_bits = 8``; ops with no such attribute up the tree stay at the default (32).
    """
    modules = dict(model.named_modules())
    found: dict[str, int] = {}
    for r in records:
        owner = r.path.split(":")[0]
        while True:
            value = getattr(modules.get(owner), attribute, None)
            if value is not None:
                found[r.path] = check_bits(value, f"{owner or '<root>'}.{attribute}", tree=attribute == "accumulator_bits")
                break
            if not owner:
                break
            owner = owner.rpartition(".")[0]
    return found
