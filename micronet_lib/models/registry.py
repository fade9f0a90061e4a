"""Model registry: ``@register_model`` on keyword-only builders; ``build_model``/``list_models`` look up."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

__all__ = ["register_model", "build_model", "list_models", "model_builder"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name`` (default: the function's name). Duplicate names raise."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(f"model name {key!r} is already registered")
        _BUILDERS[key] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_BUILDERS)


def model_builder(name: str) -> Callable[..., nn.Module]:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def build_model(name: str, **options) -> nn.Module:
    """Build a registered model, e.g. ``build_model("micronet_v1", num_classes=100)``.

    ``name``: ``micronet_v1``, ``micronet_v2`` (docs/method.md §3), ``wrn28_10`` (the score normaliser) or
    any other registered name (``models.registry``); ``options`` go to its builder, e.g.
    ``width_mult`` / ``depth_mult`` for the smaller MicroNets the short profiles train.
    """
    return model_builder(name)(**options)
