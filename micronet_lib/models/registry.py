"""Model registry: ``@register_model`` on keyword-only builders; ``build_model``/``list_models`` look up."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from micronet_lib.registry import Registry

__all__ = ["register_model", "build_model", "list_models", "model_builder", "MODELS"]

#: Every model builder, filled by the modules of this package as they are imported.
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str | None = None) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name`` (default: the function's name). Duplicate names raise."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return MODELS.names()


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The registered builder ``name``; an unknown name raises a ``ValueError`` listing the known ones."""
    return MODELS.get(name)


def build_model(name: str, **options) -> nn.Module:
    """Build a registered model, e.g. ``build_model("micronet_v1", num_classes=100)``.

    ``name``: ``micronet_v1``, ``micronet_v2`` (docs/method.md §3), ``wrn28_10`` (the score normaliser) or
    any other registered name (``models.registry``); ``options`` go to its builder, e.g.
    ``width_mult`` / ``depth_mult`` for the smaller MicroNets the short profiles train.
    """
    return model_builder(name)(**options)
