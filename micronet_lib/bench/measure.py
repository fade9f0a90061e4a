"""``micronet bench train|eval|epoch``: this project's execution vs an authors-style one, same process.

The reference is :mod:`micronet_lib.bench.authors_style` (NCHW fp32, ``x·relu6(x+3)/6``, unfused SE, the
orthogonality penalty layer by layer, ``loss.item()`` per step, PIL per image in a ``DataLoader``),
loaded with the same trained weights (``micronet_v2_pr_60`` by default). Every figure comes from
blocks of calls timed in alternation (``execution.time_alternating``), so background load on a shared
machine hits every side alike; results are ratios to the reference plus the images/s behind them,
with the machine's CPU flags, the allocator state and the load average stated.

* train: one step (forward, cross-entropy + 0.7·ortho over the 68 1×1 convs, backward, Nesterov SGD)
  at batch 128 on fixed random inputs, per execution mode (channels-last modes on CPU train BatchNorm +
  hard-swish through ``accel/norm_kernel.py`` where it is available; the machine line says);
* eval: one inference batch of 256 (this project's side runs ``evaluate.inference_copy``: BatchNorm
  folded, conv + hard-swish fused on CPU), per execution mode;
* epoch: whole epochs of ``fit`` under the paper recipe (FastAA 4×, CutMix, weighted LS,
  orthogonality; ``precision``/``memory_format`` "auto") on a small real-image subset, vs the same
  epoch through the authors-style pipeline and step.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
from typing import Callable

import torch

from micronet_lib.accel import allocator, execution, norm_kernel
from micronet_lib.accel.kernel_blocks import accelerate
from micronet_lib.bench.authors_style import authors_epoch, authors_step, authors_style
from micronet_lib.evaluate import inference_copy, resolve_eval_mode
from micronet_lib.models import build_model
from micronet_lib.models.checkpoints import load_checkpoint
from micronet_lib.regularizers import make_loss, orthogonality_penalty
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.engine import fit
from micronet_lib.train.runs import read_metrics
from micronet_lib.train.setup import build_training_model, prepare_data
from micronet_lib.bench.step_capture import capture_runners

__all__ = ["machine_info", "load_weights", "bench_train", "bench_eval", "bench_epoch", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = "micronet_v2_pr_60"


def machine_info(device: torch.device) -> dict:
    """CPU model and the flags that matter, threads, load average, allocator, torch version, GPU name."""
    info = execution.cpu_flags()
    out = {"cpu": info["model"], "flags": info["flags"], "bf16_native": execution.bf16_native(device),
           "threads": torch.get_num_threads(), "torch": str(torch.__version__), "device": str(device),
           "allocator": allocator.state()}
    if hasattr(os, "getloadavg"):
        out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["norm_kernel"] = norm_kernel.status()  # norm_kernel.FUSED, or "aten (why)"
    return out


def load_weights(weights: str | None, *, model_name: str = "micronet_v2", num_classes: int = 100) -> torch.nn.Module:
    """A released checkpoint (masks attached) or, with ``weights=None``, a seeded fresh ``model_name``."""
    if weights:
        return load_checkpoint(weights)
    torch.manual_seed(0)
    return build_model(model_name, num_classes=num_classes)


def _modes(device: torch.device, compile: bool) -> list[execution.ExecutionMode]:
    """Every mode the machine runs, eager; with ``compile`` each again under ``torch.compile``."""
    eager = execution.candidates(device, compile=False)
    return eager + (execution.candidates(device, compile=True) if compile else [])


def _result(seconds: dict[str, float], images: int, chosen: dict, device: torch.device, **extra) -> dict:
    base = seconds["authors"]
    return {"machine": machine_info(device), "chosen": chosen["name"], "chosen_source": chosen["source"],
            "calibration_s": chosen.get("seconds", {}), **extra,
            "images_per_s": {k: round(images / v, 1) for k, v in seconds.items()},
            "ratio_vs_authors": {k: round(base / v, 2) for k, v in seconds.items()}}


def _authors_train_step(model, *, batch_size, device: torch.device, num_classes=100) -> Callable[[], None]:
    work = authors_style(copy.deepcopy(model)).to(device).train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
    opt = torch.optim.SGD(work.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-5)
    # loss.item() every step (the authors' host read) also waits for a GPU step to finish
    step = authors_step(work, opt, make_loss("ce", num_classes=num_classes).to(device))
    return lambda: step(x, y)


def bench_train(*, weights: str | None = DEFAULT_WEIGHTS, batch_size: int = 128, steps: int = 3, rounds: int = 3,
                warmup: int = 1, device: str = "cpu", compile: bool = False, aten_bn: bool = False,
                capture: bool = False) -> dict:
    """Training-step images/s and ratios vs the authors-style fp32 NCHW step on the same device.

    ``capture``: also time the paper-recipe step eager, as one CUDA graph and under reduce-overhead compile
    (runners ``"step eager|graph|compile"``, :mod:`.step_capture`), in the same alternation.

    ``aten_bn``: also time every channels-last mode with ATen's BatchNorm and hard-swish instead of the
    training kernel (runner ``"<mode> (ATen BN)"``), in the same alternation: what the kernel contributes.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        allocator.configure()
    model = accelerate(load_weights(weights))  # as training builds it (train.setup.build_training_model)
    # One step definition for the calibration and the figures: execution.train_runner.
    project_step = execution.train_runner(model, batch_size=batch_size, num_classes=100, device=dev,
                                          ortho=lambda m: 0.7 * orthogonality_penalty(m))
    chosen = execution.resolve("train", dev, project_step, model_key=execution.model_key(model, 100), batch_size=batch_size)
    runners = {"authors": _authors_train_step(model, batch_size=batch_size, device=dev)}
    for mode in _modes(dev, compile):
        runners[mode.name] = project_step(mode)
        if aten_bn and mode.channels_last and dev.type == "cpu" and norm_kernel.available():
            runners[f"{mode.name} (ATen BN)"] = _under(norm_kernel.aten_only, project_step(mode))
    if capture:
        runners.update(capture_runners(model, batch_size=batch_size, device=dev))
    seconds = execution.time_alternating(runners, steps=steps, warmup=warmup, rounds=rounds)
    return _result(seconds, batch_size, chosen, dev, weights=weights, batch_size=batch_size, steps=steps, rounds=rounds)


def _under(context, step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with context():
            step()

    return run


def bench_eval(*, weights: str | None = DEFAULT_WEIGHTS, batch_size: int = 256, steps: int = 3, rounds: int = 3,
               warmup: int = 1, device: str = "cpu", compile: bool = False) -> dict:
    """Inference images/s and ratios vs the authors-style fp32 NCHW forward (``torch.no_grad``, BN unfolded)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        allocator.configure()
    model = load_weights(weights)
    chosen = resolve_eval_mode(model, batch_size=batch_size, device=dev, num_classes=100)
    x = torch.randn(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dev)
    authors = authors_style(copy.deepcopy(model)).to(dev).eval()

    def authors_forward() -> None:
        with torch.no_grad():
            authors(x).argmax(1).tolist()  # the authors read predictions back per batch (a GPU sync too)

    runners: dict[str, Callable[[], None]] = {"authors": authors_forward}
    prepared: dict[str, dict] = {}  # per mode: BN folded? how many conv + hard-swish pairs fused?

    def prepare(m: torch.nn.Module, mode: execution.ExecutionMode) -> torch.nn.Module:
        work, prepared[mode.name] = inference_copy(m, mode, dev)
        return work

    for mode in _modes(dev, compile):
        runners[mode.name] = execution.eval_runner(model, batch_size=batch_size, device=dev, prepare=prepare)(mode)
    seconds = execution.time_alternating(runners, steps=steps, warmup=warmup, rounds=rounds)
    return _result(seconds, batch_size, chosen, dev, weights=weights, batch_size=batch_size, steps=steps, rounds=rounds,
                   prepared=prepared)


def bench_epoch(*, data: str, train_per_class: int = 20, test_per_class: int = 10, rounds: int = 2,
                device: str = "cpu", seed: int = 0, authors_workers: int | None = None,
                capture_step: str = "off") -> dict:
    """Images/s of whole epochs (training pass + test pass) of ``fit`` under the paper recipe vs authors-style.

    The paper recipe: FastAA 4× epoch, CutMix every batch, weighted label smoothing, 0.7·orthogonality,
    Nesterov SGD at batch 128 (``TrainConfig`` "paper" values), on ``train_per_class`` images per class,
    with ``precision``/``memory_format`` "auto"; fresh initial weights on both sides. The two sides
    alternate epoch by epoch, ``rounds`` times each; images/s = training samples / epoch seconds.
    ``authors_workers``: the authors-style ``DataLoader``'s worker processes; default 4 on a GPU (the
    authors' loader, docs/method.md §5.1) and 0 on a CPU, whose cores the step itself needs.
    ``capture_step``: ``fit``'s step eager ("off") or captured ("graph", "compile"; train/step.py).
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        allocator.configure()
    if authors_workers is None:
        authors_workers = 0 if dev.type == "cpu" else 4
    config = TrainConfig.from_profile(
        "paper", dataset=data, train_per_class=train_per_class, test_per_class=test_per_class, cycles=1,
        epochs_per_cycle=1, loss="wls", epsilon=0.1, precision="auto", memory_format="auto", device=device,
        seed=seed, select_on="last", capture_step=capture_step)
    ds = prepare_data(config)
    times: dict[str, list[float]] = {"authors": [], "project": []}
    images = 0
    execution_record = None
    with tempfile.TemporaryDirectory(prefix="micronet-bench-epoch-") as tmp:
        # An untimed first fit resolves (calibrates or reads from the cache) the execution mode.
        fit(config, os.path.join(tmp, "warm"), progress=False)
        for r in range(rounds):
            model = authors_style(build_training_model(config, ds.num_classes))
            out = authors_epoch(model, ds, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                                loss="wls", seed=seed + r, device=dev, num_workers=authors_workers)
            times["authors"].append(out["seconds"])
            images = out["images"]
            run_dir = os.path.join(tmp, f"run{r}")
            summary = fit(config, run_dir, progress=False)
            record = read_metrics(run_dir)[-1]
            times["project"].append(record["seconds"])
            execution_record = summary.get("execution")

    seconds = {k: statistics.median(v) for k, v in times.items()}
    chosen = {"name": execution_record["train"]["name"] if execution_record else "?",
              "source": execution_record["train"]["source"] if execution_record else "?"}
    result = _result(seconds, images, chosen, dev, data=ds.description, train_images=len(ds.train),
                     samples_per_epoch=images, rounds=rounds, authors_workers=authors_workers,
                     epoch_seconds={k: [round(t, 2) for t in v] for k, v in times.items()})
    result["eval_mode"] = execution_record["eval"]["name"] if execution_record else None
    result["capture_step"] = capture_step
    return result
