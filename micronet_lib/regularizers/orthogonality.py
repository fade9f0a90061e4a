"""SRIP-style orthogonality penalty on 1×1 convolutions (docs/method.md §6.1, after Bansal et al. 2018).

For each selected layer, W is reshaped to (out, in), A = WᵀW − I, and σ_max(A) is estimated by the
authors' *one* power-iteration step with a fresh random start vector at every call; the penalty is
σ² averaged over layers. Nothing is detached, so gradients also flow through the iteration vectors,
as in the authors' code.

Coefficient: the code and the README recipe multiply the mean over the 68 layers by
:data:`ORTHO_COEFFICIENT` = 0.7; the README prose says 1e-2 (:data:`ORTHO_COEFFICIENT_README`). The two
roughly agree if 1e-2 is meant per layer on the *sum* (0.7 / 68 ≈ 0.0103), docs/method.md §11 item 4.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import nn

from micronet_lib.models.micronet import weight_group

__all__ = [
    "LAYER_SETS",
    "ORTHO_COEFFICIENT",
    "ORTHO_COEFFICIENT_README",
    "layer_spectral_penalty",
    "orthogonality_penalty",
    "select_layers",
]

ORTHO_COEFFICIENT = 0.7  # authors' code and README recipe, on the mean over layers (docs/method.md §5.5)
ORTHO_COEFFICIENT_README = 1e-2  # README prose (docs/method.md §6.1, §11 item 4)

# "all_1x1" is the authors' choice (68 layers in MicroNet: expand, project, shortcut, SE fc1/fc2);
# "expand" / "project" are the unused variants of their code (docs/method.md §6.1, §5.9).
LAYER_SETS = ("all_1x1", "expand", "project")
_EPS = 1e-12  # the authors' normalisation eps (docs/method.md §6.1)

LayerPredicate = Callable[[str, nn.Module], bool]


def _is_1x1_conv(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        isinstance(module, nn.Conv2d)
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 4
        and tuple(weight.shape[-2:]) == (1, 1)
    )


def _group_predicate(group: str) -> LayerPredicate:
    # The model package owns the name → group table (docs/method.md §4.3); a module that is not part of a
    # MicroNet simply does not belong to the group.

    def predicate(name: str, module: nn.Module) -> bool:
        if not _is_1x1_conv(module):
            return False
        try:
            return weight_group(f"{name}.weight") == group
        except ValueError:
            return False

    return predicate


def select_layers(model: nn.Module, layers: Union[str, LayerPredicate] = "all_1x1") -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs the penalty acts on, in ``named_modules`` order.

    ``layers``: ``"all_1x1"`` (every Conv2d with a 1×1 kernel: the authors' 68 layers), ``"expand"``,
    ``"project"`` (MicroNet groups, docs/method.md §4.5), or a callable ``predicate(name, module) -> bool``.
    """
    if callable(layers):
        predicate = layers
    elif layers == "all_1x1":
        predicate = lambda _name, module: _is_1x1_conv(module)  # noqa: E731
    elif layers in ("expand", "project"):
        predicate = _group_predicate(layers)
    else:
        raise ValueError(f"layers={layers!r} is not a layer set; use one of {', '.join(LAYER_SETS)} or a callable(name, module)")
    selected = [(name, module) for name, module in model.named_modules() if predicate(name, module)]
    for name, module in selected:
        if not isinstance(getattr(module, "weight", None), torch.Tensor) or module.weight.ndim < 2:
            raise ValueError(f"layer {name!r} selected by layers={layers!r} has no weight matrix (ndim >= 2)")
    return selected


def _gram_minus_identity(weight: torch.Tensor) -> torch.Tensor:
    w = weight.reshape(weight.shape[0], -1)
    if w.dtype in (torch.float16, torch.bfloat16):
        w = w.float()  # the power step divides by small norms; keep it in fp32
    return w.t() @ w - torch.eye(w.shape[1], device=w.device, dtype=w.dtype)


def layer_spectral_penalty(
    weight: torch.Tensor, *, exact: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """σ_max(WᵀW − I)² for one weight (reshaped to (out, in)), docs/method.md §6.1.

    ``exact=False``: the authors' one-step estimate (u ~ N(0, I), v = n(Aᵀu), u = n(Av), σ = uᵀAv,
    n = L2 normalisation with eps 1e-12), a lower bound of the exact value. ``exact=True``:
    ``torch.linalg.matrix_norm(A, 2)``. ``generator`` drives the random start vector.
    """
    a = _gram_minus_identity(weight)
    if exact:
        return torch.linalg.matrix_norm(a, 2) ** 2
    gen_device = generator.device if generator is not None else a.device
    u = torch.randn(a.shape[1], generator=generator, device=gen_device, dtype=a.dtype).to(a.device)
    u = F.normalize(u, dim=0, eps=_EPS)
    v = F.normalize(a.t() @ u, dim=0, eps=_EPS)
    u = F.normalize(a @ v, dim=0, eps=_EPS)
    sigma = u @ (a @ v)
    return sigma**2


def _batched_spectral_penalties(weights: list[torch.Tensor], starts: list[torch.Tensor]) -> torch.Tensor:
    """σ_max² of equal-shape weights in one batched power step (the per-layer formula, stacked).

    ``starts`` are the raw N(0, I) start vectors, one per weight, drawn beforehand in layer order, so
    the random stream is consumed exactly as by calling :func:`layer_spectral_penalty` layer by layer.
    """
    w = torch.stack([x.reshape(x.shape[0], -1) for x in weights])
    if w.dtype in (torch.float16, torch.bfloat16):
        w = w.float()

    def a_times(z: torch.Tensor) -> torch.Tensor:
        # A z = Wᵀ(W z) − z without forming the in × in Gram matrix (A is symmetric, so Aᵀ = A).
        return (w.transpose(1, 2) @ (w @ z.unsqueeze(2))).squeeze(2) - z

    u = F.normalize(torch.stack(starts).to(device=w.device, dtype=w.dtype), dim=1, eps=_EPS)
    v = F.normalize(a_times(u), dim=1, eps=_EPS)
    av = a_times(v)
    u = F.normalize(av, dim=1, eps=_EPS)
    sigma = (u * av).sum(dim=1)
    return sigma**2


def orthogonality_penalty(
    model: nn.Module,
    *,
    layers: Union[str, LayerPredicate] = "all_1x1",
    exact: bool = False,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    batched: bool = True,
) -> torch.Tensor:
    """R_ortho = mean (or sum) over the selected layers of σ_max(WᵀW − I)², docs/method.md §6.1.

    Add ``ORTHO_COEFFICIENT * orthogonality_penalty(model)`` to the loss every iteration (§5.5). Masked
    layers (``pruning.masks``) contribute their masked weight, which is what the authors' in-place
    masking leaves in ``weight`` after a forward pass (§8.1).

    ``batched=True`` (default) runs the power step once per group of equal-shape layers (68 layers of
    MicroNet ver2 fall into far fewer shapes): the start vectors are drawn first, in layer order and
    with the same calls as the per-layer path, so both paths see the same random numbers and agree to
    floating-point rounding (``batched=False`` is the layer-by-layer loop of the authors' code).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is not supported; use 'mean' or 'sum'")
    selected = select_layers(model, layers)
    if not selected:
        raise ValueError(f"layers={layers!r} selects no layer of {type(model).__name__}; nothing to orthogonalise")
    weights = []
    for _name, module in selected:
        weight = module.weight
        mask = getattr(module, "mask", None)
        if isinstance(mask, torch.Tensor) and mask.shape == weight.shape:
            weight = weight * mask
        weights.append(weight)
    if exact or not batched:
        terms = [layer_spectral_penalty(w, exact=exact, generator=generator) for w in weights]
        total = torch.stack(terms).sum()
    else:
        gen_device = generator.device if generator is not None else weights[0].device
        starts = []
        for w in weights:  # the same draws, in the same order, as layer_spectral_penalty makes
            dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
            starts.append(torch.randn(w[0].numel(), generator=generator, device=gen_device, dtype=dtype))
        groups: dict[tuple, list[int]] = {}
        for i, w in enumerate(weights):
            groups.setdefault((w.shape[0], w[0].numel(), w.dtype, w.device), []).append(i)
        total = sum(_batched_spectral_penalties([weights[i] for i in idx], [starts[i] for i in idx]).sum()
                    for idx in groups.values())
    return total / len(weights) if reduction == "mean" else total
