"""How long a training cell will take under the active profile, said before it starts (issue #12).

``announce(configs)`` prints one line such as "6 of 12 runs to train (6 finished, read back):
≈ 40 s of training steps (2 epochs × 64 images each at ≈ 950 img/s measured here, micronet_v2 ×0.25)".
The speed is measured on this machine with a few training steps of the first run still to train
(random inputs, its model, batch size, device, orthogonality term and the execution mode ``fit`` will
pick, e.g. bf16 on a CPU with native bf16); augmentation and evaluation come
on top, so the figure is a lower bound. Runs already finished are read back by ``run_or_load`` and cost
nothing. Headless report runs (``progress.bars_enabled()`` False) print nothing, so committed reports
carry no machine-dependent timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from micronet_lib.accel import allocator, execution
from micronet_lib.accel.kernel_blocks import accelerate
from micronet_lib.augment import build_pipeline
from micronet_lib.devices import resolve_device
from micronet_lib.models import build_model
from micronet_lib.progress import bars_enabled
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.records import resolve_train_mode, train_step_runner
from micronet_lib.train.runs import finished_summary_or_none
from micronet_lib.train.setup import model_options, prepare_data

__all__ = ["TrainingEstimate", "estimate_training", "announce", "is_finished"]


@dataclass(frozen=True)
class TrainingEstimate:
    """What a list of training runs will cost: runs to train, images they step through, measured speed."""

    runs: int
    to_train: int
    images: int                # training images stepped through by the runs still to train
    images_per_second: float   # measured training-step speed (0 when nothing is left to train)
    profile: str
    detail: str

    @property
    def seconds(self) -> float:
        return self.images / self.images_per_second if self.images_per_second else 0.0

    def __str__(self) -> str:
        done = self.runs - self.to_train
        head = f"{self.to_train} of {self.runs} run(s) to train under profile '{self.profile}'"
        if done:
            head += f" ({done} finished, read back)"
        if not self.to_train:
            return head + ": nothing to train, seconds to read back."
        return f"{head}: ≈ {_duration(self.seconds)} of training steps ({self.detail}); augmentation and evaluation add to it."


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def is_finished(config: TrainConfig) -> bool:
    """True when ``run_or_load(config)`` would read a finished run back instead of training."""
    return finished_summary_or_none(config) is not None  # an unreadable summary: not finished


def _images_per_epoch(config: TrainConfig) -> tuple[int, int]:
    """(training images per authors' epoch, classes) of ``config``'s data: copies per epoch × train split."""
    ds = prepare_data(config)
    copies = int(build_pipeline(config.augment, mean=ds.mean, std=ds.std).copies_per_epoch)
    return copies * len(ds.train), ds.num_classes


def measure_images_per_second(config: TrainConfig, num_classes: int, *, steps: int = 3) -> float:
    """Training-step speed of ``config``'s model on this machine, in the execution mode ``fit`` will use
    (``train.records.resolve_train_mode``: cached, or calibrated now and cached for ``fit``): median of
    ``steps`` timed steps after one warm-up, on random inputs, with its batch size and orthogonality term."""
    import torch

    device = torch.device(resolve_device(config.device))
    if device.type == "cpu":
        allocator.configure()  # as fit does: without it a fresh process's steps page-fault their activations
    model = accelerate(build_model(config.model, **model_options(config, num_classes))).to(device).train()
    mode = execution.ExecutionMode.from_dict(resolve_train_mode(config, model, num_classes, device)["mode"])
    step = train_step_runner(config, model, num_classes, device)(mode)
    seconds = execution.time_alternating({"step": step}, steps=1, warmup=1, rounds=steps)["step"]
    return config.batch_size / seconds


def estimate_training(configs: Sequence[TrainConfig]) -> TrainingEstimate:
    """The cost of ``run_or_load`` over ``configs``: runs left to train, images they step through, and the
    training-step speed of the first of them measured here (see the module docstring)."""
    configs = list(configs)
    if not configs or not all(isinstance(c, TrainConfig) for c in configs):
        raise ValueError("estimate_training needs a non-empty list of TrainConfig objects")
    todo = [c for c in configs if not is_finished(c)]
    profile = configs[0].profile
    if not todo:
        return TrainingEstimate(runs=len(configs), to_train=0, images=0, images_per_second=0.0, profile=profile, detail="")
    per_epoch, classes = _images_per_epoch(todo[0])
    images = sum(c.total_epochs * per_epoch for c in todo)
    speed = measure_images_per_second(todo[0], classes)
    first = todo[0]
    detail = (f"{images:,} training images in all, {per_epoch:,} per epoch, at ≈ {speed:,.0f} img/s measured here "
              f"for {first.model} ×{first.width_mult:g}, batch {first.batch_size}")
    return TrainingEstimate(runs=len(configs), to_train=len(todo), images=images, images_per_second=speed,
                            profile=profile, detail=detail)


def announce(configs: Sequence[TrainConfig]) -> TrainingEstimate | None:
    """Print ``estimate_training(configs)`` before a long cell starts; silent (None) in headless report runs."""
    if not bars_enabled():
        return None
    estimate = estimate_training(configs)
    print(estimate, flush=True)
    return estimate
