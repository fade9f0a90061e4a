"""The training profiles: values that differ from the paper's recipe, each with its reason.

``paper`` is the authors' recipe (no overrides). ``cpu`` and ``smoke`` shrink the budget; every value
they change is listed with the reason, and ``TrainConfig.deviations`` reports them on each run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROFILES", "list_profiles"]

_AUTO_MODE = ("execution mode (bf16 autocast / channels-last where faster) calibrated per machine and recorded in the "
              "run (execution.json); changes rounding only, not the recipe")
_SHORT_BUDGET_BN = (
    "BN momentum 0.01 leaves the running statistics near their init after a few hundred steps, so an "
    "eval-mode model scores chance; statistics are re-estimated on training images before each evaluation"
)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"values": {}, "reasons": {}},
    "cpu": {
        "values": dict(
            # the cpu notebook budget (notebooks/params/cpu.yaml), so its runs carry these reasons
            train_per_class=120, val_per_class=20, test_per_class=50,
            augment="baseline", cycles=1, epochs_per_cycle=5,
            select_on="val", bn_recalibrate_images=500, precision="auto", memory_format="auto",
        ),
        "reasons": {
            "train_per_class": "CPU budget: a stratified subset of the training set",
            "val_per_class": "honest model selection on a held-out split of train (docs/method.md §5.7)",
            "test_per_class": "CPU budget: a stratified subset of the test set",
            "augment": "crop + flip: a few epochs are too short for Fast-AutoAugment's 4×-replicated epoch to pay off",
            "cycles": "CPU budget: one cosine cycle instead of four",
            "epochs_per_cycle": "CPU budget: a few minutes on two cores",
            "select_on": "honest model selection on a validation split instead of the test set (docs/method.md §5.7)",
            "bn_recalibrate_images": _SHORT_BUDGET_BN,
            "precision": _AUTO_MODE,
            "memory_format": _AUTO_MODE,
        },
    },
    "smoke": {
        "values": dict(
            dataset="synthetic", width_mult=0.25, depth_mult=0.5, train_per_class=32, val_per_class=8,
            test_per_class=16,
            augment="baseline", cycles=2, epochs_per_cycle=2, batch_size=32,
            select_on="val", bn_recalibrate_images=256, eval_batch_size=128, precision="auto", memory_format="auto",
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
            "precision": _AUTO_MODE,
            "memory_format": _AUTO_MODE,
        },
    },
}


def list_profiles() -> list[str]:
    return sorted(PROFILES)
