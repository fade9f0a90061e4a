"""The training profiles: values that differ from the paper's recipe, each with its reason.

``paper`` is the authors' recipe (no overrides). ``cpu`` and ``smoke`` shrink the budget; every value
they change is listed with the reason, and ``TrainConfig.deviations`` reports them on each run.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from micronet_lib.accel import execution
from micronet_lib.devices import resolve_device

__all__ = ["PROFILES", "list_profiles", "EXECUTION_ENV", "parse_execution", "profile_execution"]

# A profile that publishes results names its execution mode: no timing calibration decides what a committed
# table holds (issue #28). MICRONET_EXECUTION (or `micronet reproduce --execution`) overrides it.
EXECUTION_ENV = "MICRONET_EXECUTION"
_NAMED_MODE = ("execution mode named by the profile, never chosen by timing: bf16 autocast + channels-last (about 3x "
               "the fp32 step on a CPU with native bf16); changes rounding only, not the recipe")
_SHORT_BUDGET_BN = (
    "BN momentum 0.01 leaves the running statistics near their init after a few hundred steps, so an "
    "eval-mode model scores chance; statistics are re-estimated on training images before each evaluation"
)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"values": {}, "reasons": {}},
    "cpu": {
        "values": dict(
            # the cpu notebook budget (notebooks/params/cpu.yaml), so its runs carry these reasons
            train_per_class=200, val_per_class=50, test_per_class=20,
            augment="baseline", cycles=1, epochs_per_cycle=16,
            select_on="val", bn_recalibrate_images=500, precision="bf16", memory_format="channels_last",
        ),
        "reasons": {
            "train_per_class": "CPU budget: a stratified subset of the training set",
            "val_per_class": "honest model selection on a held-out split of train (docs/method.md §5.7)",
            "test_per_class": "CPU budget: a per-epoch curve subset; claims are scored on every test image (issue #28)",
            "augment": "crop + flip: a few epochs are too short for Fast-AutoAugment's 4×-replicated epoch to pay off",
            "cycles": "CPU budget: one cosine cycle instead of four",
            "epochs_per_cycle": "CPU budget: 16 passes over the training subset, the long-training regime (docs/study-design.md)",
            "select_on": "honest model selection on a validation split instead of the test set (docs/method.md §5.7)",
            "bn_recalibrate_images": _SHORT_BUDGET_BN,
            "precision": _NAMED_MODE,
            "memory_format": _NAMED_MODE,
        },
    },
    "gpu": {
        "values": dict(
            # the gpu notebook budget (notebooks/params/gpu.yaml): the cpu study's cells on the whole data set
            val_per_class=50, augment="baseline", cycles=1, epochs_per_cycle=60, select_on="val",
        ),
        "reasons": {
            "val_per_class": "honest model selection on a held-out split of train (docs/method.md §5.7)",
            "augment": "crop + flip: the study's baseline; the augmentation cells name their own pipeline",
            "cycles": "GPU study budget: one cosine cycle instead of four (docs/study-design.md)",
            "epochs_per_cycle": "GPU study budget: 60 epochs of the whole training set (docs/study-design.md)",
            "select_on": "honest model selection on a validation split instead of the test set (docs/method.md §5.7)",
        },
    },
    "smoke": {
        "values": dict(
            dataset="synthetic", width_mult=0.25, depth_mult=0.5, train_per_class=32, val_per_class=8,
            test_per_class=16,
            augment="baseline", cycles=2, epochs_per_cycle=2, batch_size=32,
            select_on="val", bn_recalibrate_images=256, eval_batch_size=128,
        ),
        "reasons": {
            "dataset": "smoke test: synthetic images, no download",
            "width_mult": "smoke test: a quarter-width network",
            "depth_mult": "smoke test: half the blocks per stage (rounded up)",
            "train_per_class": "smoke test: a few images per class",
            "val_per_class": "honest model selection on a held-out split of train (docs/method.md §5.7)",
            "test_per_class": "smoke test: a few images per class",
            "augment": "smoke test: crop + flip only",
            "cycles": "smoke test: two short cycles exercise the warm restart",
            "epochs_per_cycle": "smoke test",
            "batch_size": "smoke test: several steps per epoch on a tiny set",
            "select_on": "honest model selection on a validation split instead of the test set (docs/method.md §5.7)",
            "bn_recalibrate_images": _SHORT_BUDGET_BN,
            "eval_batch_size": "smoke test",
        },
    },
}


def list_profiles() -> list[str]:
    return sorted(PROFILES)


def parse_execution(text: str) -> tuple[str, str]:
    """``"bf16+channels_last"`` → ``("bf16", "channels_last")``; ``"fp32"`` → ``("fp32", "contiguous")``;
    ``"auto"`` → ``("auto", "auto")`` (calibrated by timing: interactive work only)."""
    if text == "auto":
        return "auto", "auto"
    precision, _, memory_format = text.partition("+")
    memory_format = memory_format or "contiguous"
    if precision not in ("fp32", "bf16", "fp16") or memory_format not in ("contiguous", "channels_last"):
        raise ValueError(f"execution mode {text!r}: expected '<fp32|bf16|fp16>[+contiguous|+channels_last]' "
                         "or 'auto', e.g. 'bf16+channels_last'")
    return precision, memory_format


def profile_execution(profile: str, device: str = "auto") -> dict[str, str]:
    """The execution mode runs of ``profile`` use here: the profile's named mode, or ``$MICRONET_EXECUTION``.

    Returns ``{"precision", "memory_format", "name", "source"}``. A mode this machine cannot run raises a
    one-line ``ValueError`` naming the mode and the override, before any work.
    """
    values = PROFILES.get(profile, {}).get("values", {})
    override = os.environ.get(EXECUTION_ENV, "").strip()
    if override:
        precision, memory_format = parse_execution(override)
        source = f"override ${EXECUTION_ENV}={override}"
    else:
        precision, memory_format = values.get("precision", "fp32"), values.get("memory_format", "contiguous")
        source = f"named by the {profile} profile"
    name = "auto" if "auto" in (precision, memory_format) else (
        precision + ("+channels_last" if memory_format == "channels_last" else "+contiguous"))
    if precision in ("bf16", "fp16"):
        dev = torch.device(resolve_device("auto") if device == "auto" else device)
        why = ("fp16 needs a CUDA device" if precision == "fp16" and dev.type != "cuda" else
               f"this {dev.type} has no native bf16 (avx512_bf16 or AMX on a CPU)" if precision == "bf16"
               and not execution.bf16_native(dev) else None)
        if why:
            raise ValueError(f"execution mode {name} ({source}) cannot run here: {why}; override it with "
                             f"{EXECUTION_ENV}=fp32+{memory_format} (or `micronet reproduce --execution "
                             f"fp32+{memory_format}`): tables then differ from the committed set's by rounding")
    return {"precision": precision, "memory_format": memory_format, "name": name, "source": source}
