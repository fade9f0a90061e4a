"""Models and scoring options from outside the project: ``module:function`` factories and bits files.

``model_from_factory("pkg.models:build", weights="net.pt")`` imports ``pkg.models``, calls ``build()``
and loads the weights strictly; ``read_options_file("bits.yaml")`` reads the keyword options of
:func:`micronet_lib.scoring.count` that describe an entry (bit widths, bias policy, exit rates).
Every failure is a one-line ``ValueError`` / ``FileNotFoundError`` saying what to fix.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["model_from_factory", "read_options_file", "OPTION_KEYS"]

OPTION_KEYS = ("param_bits", "act_bits", "accumulator_bits", "bias_bits", "bias", "exit_rates", "extra_params")


def _state_dict(blob: Any, path: Path) -> dict:
    """A plain state dict, or one under a usual key of a training checkpoint."""
    if isinstance(blob, dict):
        for key in ("state_dict", "model", "net"):
            if isinstance(blob.get(key), dict):
                blob = blob[key]
                break
        if blob and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items()):
            return blob
    raise ValueError(f"--weights {path}: expected a state dict (name -> tensor), or one under 'state_dict'/'model'")


def model_from_factory(spec: str, *, weights: str | os.PathLike | None = None,
                       num_classes: int | None = None) -> nn.Module:
    """Build ``module:function()`` (importable from ``sys.path``), load ``weights`` strictly, eval mode.

    ``num_classes`` is passed as ``function(num_classes=...)`` (torchvision's and timm's factories take it);
    a factory without that keyword is refused rather than scored at its own head size without a word."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"--model-factory {spec!r} must be 'module:function', e.g. 'mypkg.nets:build_net'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--model-factory {spec!r}: cannot import {module_name!r} ({exc}); "
                         "put its folder on PYTHONPATH") from None
    factory = module
    for part in func_name.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"--model-factory {spec!r}: {module_name!r} has no attribute {func_name!r}")
    if not callable(factory):
        raise ValueError(f"--model-factory {spec!r}: {func_name!r} is not callable")
    kwargs = {}
    if num_classes is not None:
        try:
            parameters = list(inspect.signature(factory).parameters.values())
        except (TypeError, ValueError):  # a builtin without a signature: let the call decide
            parameters = None
        if parameters is not None and not any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in parameters):
            raise ValueError(f"--num-classes {num_classes}: {spec} takes no num_classes argument, so the head "
                             "width cannot be set; drop --num-classes (the model's own head is scored) or point "
                             "--model-factory at a function that takes num_classes")
        kwargs["num_classes"] = num_classes
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model-factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"--weights {path}: no such file")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a file it cannot read
            raise ValueError(f"--weights {path}: cannot be read as a torch file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]})") from None
        state = _state_dict(blob, path)
        own = model.state_dict()
        wrong = [f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
                 for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:  # torch's own message lists every tensor on hundreds of lines
            raise ValueError(f"--weights {path} does not fit the model: {len(wrong)} shape mismatch(es), first "
                             f"{wrong[0]}; build the model the weights were trained with (e.g. its number of classes)")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"--weights {path} does not fit the model: missing {result.missing_keys[:4]}, "
                             f"unexpected {result.unexpected_keys[:4]}")
    return model.eval()


def read_options_file(path: str | os.PathLike) -> dict:
    """The ``count`` options stored in a YAML file: ``param_bits``, ``act_bits``, ``accumulator_bits``,
    ``bias_bits`` (an int, ``{glob: bits}`` or ``model``; ``accumulator_bits`` also ``tree:N``), ``bias``,
    ``exit_rates`` and ``extra_params``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--bits-file {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--bits-file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--bits-file {path}: expected a mapping of options, got {type(data).__name__}")
    unknown = sorted(set(data) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"--bits-file {path}: unknown key(s) {unknown}; allowed: {', '.join(OPTION_KEYS)}")
    return data
