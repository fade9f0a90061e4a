"""What the notebooks share: ``prologue(threads)``, their common first step, and ``released_models``.

A notebook stays thin: its prologue cell imports what it uses and calls :func:`prologue` once; a helper
two notebooks need lives here, not in both.
"""

from __future__ import annotations

import logging
import warnings
from typing import Iterable

import pandas as pd
import torch

from micronet_lib.assets import AssetUnavailableError
from micronet_lib.models import load_released
from micronet_lib.report import results

__all__ = ["prologue", "released_models"]


def prologue(threads: int) -> None:
    """The notebooks' common setup: torch's CPU threads (``threads``; 0 keeps torch's default), the
    figure style, pandas' table width, and the library's warnings left to the reports' notes."""
    if threads:
        torch.set_num_threads(threads)
    results.apply_style()
    pd.set_option("display.max_columns", 30)
    # The library's warnings (e.g. "AutoAugment's policy is CIFAR-10's") are stated in the reports' notes instead.
    logging.getLogger("micronet_lib").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="IProgress not found")


def released_models(names: Iterable[str]) -> dict:
    """Load the released checkpoints that are available here; a visible note names the missing ones."""
    out, missing = {}, []
    for name in names:
        try:
            out[name] = load_released(name)
        except AssetUnavailableError:
            missing.append(name)
    if missing:
        results.note("Released checkpoints not available here (set MICRONET_ASSETS or go online): " + ", ".join(missing)
                     + ". Their rows and panels are missing below.")
    return out
