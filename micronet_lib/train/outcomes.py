"""Per-image test outcomes of a trained run, kept in its committed record (issue #28).

A comparison of two training cells is paired twice: by seed (the same seed feeds both arms) and by
image (both models are scored on the same test images). The second pairing needs, for every run, whether
its selected weights classify each test image correctly. ``test_outcomes(summary)`` evaluates the run's
``best.pt`` on **every** test image the data has (not the run's per-epoch test subset, which is drawn per
seed) once, in the run's recorded evaluation mode, and stores the top-1 class of each image in
``<run>/derived/test_outcomes.json`` (``runstore.derived``): a fresh clone without checkpoints reads it
back, so the committed set stands in for its runs.

Stored compactly: the predicted classes as base64 of one byte per image (≤ 256 classes) and the labels'
hash, so two records are known to be on the same images in the same order (``test_id``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from micronet_lib import data
from micronet_lib.devices import resolve_device
from micronet_lib.evaluate import evaluate
from micronet_lib.models import load_checkpoint
from micronet_lib.runstore.derived import derived
from micronet_lib.train.config import TrainConfig

__all__ = ["Outcomes", "outcome_dataset", "test_outcomes", "stack_correct", "encode_classes", "decode_classes"]

NAME = "test_outcomes"
# Synthetic test images depend on the sampling seed (their class definitions do not): the outcomes of every
# seed are taken on the images of this one seed, so that runs of different seeds share their test images.
SYNTHETIC_TEST_SEED = 0


def encode_classes(values: np.ndarray) -> str:
    """Class indices (0–255) → base64 text, one byte per image."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"class indices must be in 0..255 to be stored one byte each, got {values.min()}..{values.max()}")
    return base64.b64encode(values.astype(np.uint8).tobytes()).decode("ascii")


def decode_classes(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text.encode("ascii")), dtype=np.uint8).astype(np.int64)


def _labels_id(labels: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:12]


@dataclass(frozen=True)
class Outcomes:
    """The top-1 class ``predicted`` and the ``labels`` of each test image (same order); ``test_id`` names the
    images (data and label hash), so records with equal ids are paired image by image."""

    predicted: np.ndarray
    labels: np.ndarray
    test_id: str

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def top1(self) -> float:
        return 100.0 * float(self.correct.mean())

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    def to_record(self) -> dict[str, Any]:
        return {"test_id": self.test_id, "n": self.n, "top1": round(self.top1, 4),
                "predicted": encode_classes(self.predicted), "labels": encode_classes(self.labels)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Outcomes":
        out = cls(decode_classes(record["predicted"]), decode_classes(record["labels"]), record["test_id"])
        if out.predicted.shape != out.labels.shape or out.n != record["n"]:
            raise ValueError(f"test outcome record for {record.get('test_id')} is inconsistent "
                             f"({out.predicted.shape[0]} predictions, {out.labels.shape[0]} labels, n = {record['n']})")
        return out


def outcome_dataset(config):
    """The data whose whole test split the outcomes are taken on: the run's data set without its test subset
    (synthetic: the test images of ``SYNTHETIC_TEST_SEED``, as many per class as the run's test split)."""
    if config.dataset == "synthetic":
        return data.load_dataset("synthetic", seed=SYNTHETIC_TEST_SEED,
                                 synthetic_train_per_class=(config.train_per_class or 500) + (config.val_per_class or 0),
                                 synthetic_test_per_class=config.test_per_class or 100)
    return data.load_dataset(config.dataset, root=config.data_root, seed=config.seed)


def _eval_mode(summary: Mapping[str, Any]) -> dict[str, str]:
    mode = ((summary.get("execution") or {}).get("eval") or {}).get("mode") or {}
    return {"precision": mode.get("precision", "fp32"), "memory_format": mode.get("memory_format", "contiguous")}


def test_outcomes(summary: Mapping[str, Any], *, checkpoint: str = "best.pt") -> Outcomes:
    """The run's per-image outcomes on the whole test split: read from its record, or computed from
    ``checkpoint`` in the run's recorded evaluation mode and stored (``runstore.derived``).
    Raises ``runstore.derived.CheckpointAbsent`` when neither is here."""
    config = TrainConfig.from_dict(summary["config"])
    mode = _eval_mode(summary)

    def compute(path: Path) -> dict[str, Any]:
        ds = outcome_dataset(config)
        net = load_checkpoint(path)
        result = evaluate(net, ds, "test", batch_size=config.eval_batch_size, device=torch.device(resolve_device(config.device)),
                          progress=False, allow_tf32=config.allow_tf32, **mode)
        labels = ds.test.labels.numpy()
        test_id = f"{ds.name}:test{len(labels)}#{_labels_id(labels)}"
        return Outcomes(result.predicted.astype(np.int64), labels, test_id).to_record()

    key = {"checkpoint": checkpoint, "split": "test", "subset": "all", **mode}
    return Outcomes.from_record(derived(summary, NAME, compute, key=key, checkpoint=checkpoint))


def stack_correct(outcomes: Sequence[Outcomes]) -> np.ndarray:
    """Runs × images boolean matrix of correctness; every run must be on the same images (``test_id``)."""
    ids = {o.test_id for o in outcomes}
    if len(ids) != 1:
        raise ValueError(f"the runs were scored on different test images ({', '.join(sorted(ids))}): "
                         "per-image pairing needs one test split")
    return np.stack([o.correct for o in outcomes])
