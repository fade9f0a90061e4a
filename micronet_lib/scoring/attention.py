"""Products of two tensors and attention, counted from their shapes (docs/scoring.md "Attention and matmul").

The counting library has no matmul; a product ``A (…, n, k) @ B (…, k, m)`` is charged like its
FullyConnected without a bias, per output element: k mults and k − 1 adds (the same in both
conventions: the kaist FC formula with d = 1 is the official one without the bias add). Softmax over a
row of S elements: exp and divide, 2 mults per element (a transcendental is 1 op, as in the library's
sigmoid), and S − 1 adds per row. Attention (``F.scaled_dot_product_attention``,
``nn.MultiheadAttention``) is written out as those parts: scale Q (1 mult per element of Q), QKᵀ,
the mask (1 add per score) when one is given, softmax, AV; ``nn.MultiheadAttention`` adds its input
and output projections as linear layers (each convention charges them as its FC), and the head
average of the returned weights ((H − 1) adds + 1 mult per averaged weight) when it returns them.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import torch

from micronet_lib.scoring.records import OpRecord, UnsupportedOpError, register_call

__all__ = ["FUNCTIONS", "functional", "mha_module", "attention_records"]

MATMULS = frozenset({"matmul", "__matmul__", "__rmatmul__", "bmm", "mm"})
FUNCTIONS = MATMULS | {"softmax", "scaled_dot_product_attention"}


def _per_example(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape[1:])


def _matmul(path, op, out_shape, inner, params=(), owns=True) -> OpRecord:
    return OpRecord(path, "matmul", f"{op} (k={inner})", tuple(out_shape), fan_in=inner, terms=inner, params=params,
                    owns_params=owns)


def _softmax(path, out_shape, window) -> OpRecord:
    return OpRecord(path, "softmax", f"softmax over {window}", tuple(out_shape), window=window, terms=window)


def attention_records(path: str, q_shape, k_len: int, v_dim: int, *, masked: bool) -> list[OpRecord]:
    """Scale, QKᵀ, mask, softmax, AV of one example: ``q_shape`` = (…heads, L, d) per example."""
    *lead, length, d = q_shape
    scores = (*lead, length, k_len)
    recs = [OpRecord(f"{path}.scale", "elementwise", "scale q by 1/sqrt(d)", tuple(q_shape),
                     mults_per_element=Fraction(1)),
            _matmul(f"{path}.qk", "q @ k^T", scores, d)]
    if masked:
        recs.append(OpRecord(f"{path}.mask", "elementwise", "attention mask (add)", scores, adds_per_element=Fraction(1)))
    recs += [_softmax(f"{path}.softmax", scores, k_len), _matmul(f"{path}.av", "attn @ v", (*lead, length, v_dim), k_len)]
    return recs


def functional(rec, fpath, name, args, kwargs, out, params) -> None:
    """matmul/bmm/mm, softmax and F.scaled_dot_product_attention outside a handled module."""
    if name in MATMULS:
        a = args[0]
        fresh = rec.claim(*params) if params else True
        rec.add(_matmul(fpath, name, _per_example(out), int(a.shape[-1]), params, fresh))
        return
    if name == "softmax":
        x = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None:  # torch's legacy implicit dim (F.softmax, nn.Softmax())
            dim = 0 if x.dim() in (0, 1, 3) else 1
        rec.add(_softmax(fpath, _per_example(out), int(x.shape[dim])))
        return
    q, k = args[0], args[1]
    v = args[2]
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
    recs = attention_records(fpath, _per_example(q), int(k.shape[-2]), int(v.shape[-1]),
                             masked=mask is not None or bool(causal))
    if params:  # a parameter used as q, k or v directly (a learned query): stored dense with the first part
        recs[0] = replace(recs[0], params=params, owns_params=rec.claim(*params))
    for r in recs:
        rec.add(r)


def _linear(rec, path, weight, bias, length, fan_in, out_channels, rows, owns) -> OpRecord:
    return OpRecord(path, "linear", f"Linear {fan_in}->{rows} (attention projection)", (length, rows), weight=weight,
                    bias=bias, fan_in=fan_in, out_channels=out_channels, owns_params=owns)


def mha_module(rec, path, m, inputs, out_shape) -> None:
    """``nn.MultiheadAttention``: projections as linear layers, the core as :func:`attention_records`."""
    args, kwargs, output = rec.call
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    query, key, value = bound["query"], bound["key"], bound["value"]
    if not m.batch_first:
        # count() reads dim 0 as the batch everywhere; a sequence-first model would be counted per token.
        raise UnsupportedOpError(f"nn.MultiheadAttention at {path!r} has batch_first=False: the scorer counts per "
                                 "example along dim 0, so build the model batch-first (nn.MultiheadAttention(..., "
                                 "batch_first=True), inputs (N, L, E)) and count it with input_size=(1, L, E)")
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn or query.dim() != 3:
        raise UnsupportedOpError(
            f"nn.MultiheadAttention at {path!r}: only batched inputs with kdim = vdim = embed_dim, no bias_k/bias_v "
            f"and no add_zero_attn are counted from shapes; declare its cost with `{register_call(type(m), True)}`")
    lq, lk, lv = (int(t.shape[1]) for t in (query, key, value))
    e, h = m.embed_dim, m.num_heads
    w, b = rec.stat(m.in_proj_weight), rec.stat(m.in_proj_bias)
    wo, bo = rec.stat(m.out_proj.weight), rec.stat(m.out_proj.bias)
    if w is None or wo is None:
        raise UnsupportedOpError(f"nn.MultiheadAttention at {path!r}: its weights are not parameters of the model")
    fresh = rec.claim(w, b)
    for i, (part, length) in enumerate((("q", lq), ("k", lk), ("v", lv))):
        rec.add(_linear(rec, f"{path}.in_proj_{part}", w, b, length, e, 3 * e, e, fresh and i == 0))
    masked = bound.get("attn_mask") is not None or bound.get("key_padding_mask") is not None or bool(bound.get("is_causal"))
    for r in attention_records(path, (h, lq, e // h), lk, e // h, masked=masked):
        rec.add(r)
    rec.add(_linear(rec, f"{path}.out_proj", wo, bo, lq, e, e, e, rec.claim(wo, bo)))
    weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if weights is not None and bound.get("average_attn_weights", True) and h > 1:
        rec.add(OpRecord(f"{path}.average_weights", "elementwise", "mean of attention weights over heads", (lq, lk),
                         mults_per_element=Fraction(1), adds_per_element=Fraction(h - 1),
                         note="returned because need_weights=True; pass need_weights=False if unused"))
