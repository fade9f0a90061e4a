"""Setup for ``fit``: device, data subsets, the model at init, the optimiser (docs/method.md §2, §3.5, §5.3)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from micronet_lib import data
from micronet_lib.accel.execution import bf16_native
from micronet_lib.accel.kernel_blocks import accelerate
from micronet_lib.models import build_model
from micronet_lib.models.checkpoints import RELEASED_CHECKPOINTS, load_into, load_released, read_state_dict
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.runs import runs_root

__all__ = ["prepare_data", "data_fingerprint", "build_training_model", "make_optimizer", "model_options", "seed_for",
           "check_runtime"]


def seed_for(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from (seed, parts): independent streams per cycle/epoch/purpose."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def prepare_data(config: TrainConfig):
    """Load ``config.dataset`` and cut the stratified subsets; val is carved out of train (§5.7)."""
    extra = config.val_per_class or 0
    if config.dataset == "synthetic":
        # Synthetic sets are generated at the requested size directly.
        ds = data.load_dataset(
            "synthetic",
            seed=config.seed,
            synthetic_train_per_class=(config.train_per_class or 500) + extra,
            synthetic_test_per_class=config.test_per_class or 100,
        )
    else:
        ds = data.load_dataset(config.dataset, root=config.data_root, seed=config.seed)
        train_n = None if config.train_per_class is None else config.train_per_class + extra
        ds = data.subset(ds, train_per_class=train_n, test_per_class=config.test_per_class, seed=config.seed)
    if config.val_per_class:
        ds = data.with_validation(ds, val_per_class=config.val_per_class, seed=config.seed + 17)
    return ds


def data_fingerprint(ds) -> str:
    """Name, sizes and a hash of the labels and training pixels: resume refuses different data."""
    h = hashlib.sha256()
    for split in (ds.train, ds.val, ds.test):
        if split is not None:
            h.update(split.labels.numpy().tobytes())
            h.update(split.images[:: max(1, len(split.images) // 512)].numpy().tobytes())
    return f"{ds.data_id}#{h.hexdigest()[:12]}"


def model_options(config: TrainConfig, num_classes: int) -> dict[str, Any]:
    return dict(
        num_classes=num_classes,
        width_mult=config.width_mult,
        depth_mult=config.depth_mult,
        dropout=config.dropout,
        bn_momentum=config.bn_momentum,
        stride2_se=config.stride2_se,
    )


RUN_REF = "run:"


def checkpoint_path(init_from: str) -> Path:
    """The file an ``init_from`` names: ``run:<run id>/<file>`` is a checkpoint of a run in the current runs
    folder (``train.runs.runs_root``), so a config that starts from another run carries no folder path and
    keeps its hash when a results set is built in a staging folder or re-rendered on another machine;
    anything else is a path."""
    if not init_from.startswith(RUN_REF):
        return Path(init_from)

    path = runs_root() / init_from[len(RUN_REF):]
    if not path.is_file():
        raise FileNotFoundError(f"init_from={init_from!r}: {path} does not exist (checkpoints are not committed; "
                                "train that run first, or re-render from the committed run records)")
    return path


def build_training_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The model at init (seeded), with ``init_from`` weights and masks loaded strictly if given, on the
    accel layer's faster training path (``accel.kernel_blocks.accelerate``: same function and keys)."""
    torch.manual_seed(seed_for(config.seed, -1))
    model = build_model(config.model, **model_options(config, num_classes))
    if config.init_from is not None:
        if config.init_from in RELEASED_CHECKPOINTS:
            state = load_released(config.init_from, num_classes=num_classes).state_dict()
        else:
            state, _ = read_state_dict(checkpoint_path(config.init_from))
        load_into(model, state, source=str(config.init_from))
    return accelerate(model)


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """A fresh SGD (docs/method.md §5.3); ``decay_1d=False`` puts 1-D parameters (BN, biases) in a no-decay group."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if config.decay_1d or p.ndim > 1]
    no_decay = [p for p in params if not (config.decay_1d or p.ndim > 1)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    # The group structure is fixed by the config, so optimiser state always loads into the same layout.
    if not config.decay_1d:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def check_runtime(config: TrainConfig, device: torch.device) -> None:
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"TrainConfig.precision='fp16' needs a CUDA device (got {device.type}); use 'bf16' or 'fp32'")
    if config.precision == "bf16" and device.type == "cpu":
        if not bf16_native(device):
            import logging

            logging.getLogger(__name__).warning(
                "precision='bf16' on a CPU without native bf16 (avx512_bf16/AMX) is emulated and slow; "
                "'auto' picks the fastest mode this machine runs")
