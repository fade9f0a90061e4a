"""What a run writes about itself besides its weights: the summary, the execution record, the
architecture record and the runtime record, plus the messages that say how to fork an edited config.
Repairs of a run folder on restart are the run store's (``runstore.store.restore_history``,
``repair_finished``)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import micronet_lib
from micronet_lib.accel import allocator, execution, norm_kernel
from micronet_lib.accel.tf32 import tf32_flags
from micronet_lib.evaluate import resolve_eval_mode
from micronet_lib.fileio import atomic_write_json
from micronet_lib.regularizers import orthogonality_penalty
from micronet_lib.runstore import store
from micronet_lib.train import runs
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.setup import model_options

__all__ = ["EXECUTION_FILE", "run_summary", "mark_stopped", "checkpointed_epochs", "execution_record", "arch_record",
           "process_runtime", "warn_other_threads", "config_diff", "fork_command", "percent"]

log = logging.getLogger(__name__)

EXECUTION_FILE = "execution.json"  # the run's execution modes (train and eval), allocator and machine


def run_summary(config, run_dir: Path, st: dict[str, Any], *, status: str, data_desc: str, reason: str | None = None):
    history = runs.read_metrics(run_dir)
    last = history[-1] if history else {}
    best = st["best"] or {}
    out = runs.RunSummary(
        run_id=run_dir.name,
        run_dir=str(run_dir),
        status=status,
        stopped_reason=reason,
        config=config.to_dict(),
        profile=config.profile,
        deviations=config.deviations,
        selection_note=config.selection_note,
        select_on=config.select_on,
        epochs=len(history),
        epochs_total=config.total_epochs,
        seconds=round(st["seconds"], 3),
        data=data_desc,
        data_id=st["data_id"],
        library_version=micronet_lib.__version__,
        runtime=st.get("runtime"),
        loss_epsilon=config.loss_epsilon,
        tf32=tf32_flags(),
        best_cycle=best.get("cycle"),
        best_epoch=best.get("epoch"),
        cycle_best=st["cycle_best"] + ([best] if best and best.get("cycle") not in [c.get("cycle") for c in st["cycle_best"]] else []),
    )
    out["execution"] = st.get("execution")
    for split in ("val", "test"):
        for k in ("top1", "top5", "loss"):
            out[f"final_{split}_{k}"] = last.get(f"{split}_{k}")
            out[f"best_{split}_{k}"] = best.get(f"{split}_{k}")
    return out


def mark_stopped(config, run_dir, st, data_desc, message):
    runs.write_summary(run_dir, run_summary(config, run_dir, st, status="stopped", data_desc=data_desc, reason=message))


def checkpointed_epochs(run_dir: Path) -> int:
    try:
        return int(runs.load_checkpoint(run_dir / runs.LAST)["global_epoch"])
    except (ValueError, KeyError):
        return 0


def _memory_format(config: TrainConfig) -> str:
    return "channels_last" if config.channels_last else config.memory_format


def train_step_runner(config: TrainConfig, model: nn.Module, num_classes: int, device: torch.device):
    """``execution.train_runner`` for ``config``'s step: its batch size and orthogonality term."""
    ortho = ((lambda m: config.ortho_coef * orthogonality_penalty(m, layers=config.ortho_layers))
             if config.ortho_coef > 0 else None)
    return execution.train_runner(model, batch_size=config.batch_size, num_classes=num_classes, device=device,
                                  ortho=ortho)


def resolve_train_mode(config: TrainConfig, model: nn.Module, num_classes: int, device: torch.device) -> dict:
    """The training mode ``fit`` uses for ``config`` on this machine: explicit, cached, or calibrated now."""
    memory_format = _memory_format(config)
    compile_ = True if config.compile else (None if "auto" in (config.precision, memory_format) else False)
    return execution.resolve("train", device, train_step_runner(config, model, num_classes, device),
                             precision=config.precision, memory_format=memory_format, compile=compile_,
                             model_key=execution.model_key(model, num_classes), batch_size=config.batch_size)


def execution_record(config: TrainConfig, run_dir: Path, model: nn.Module, ds, device: torch.device, *,
                     checkpointed: dict | None = None) -> dict:
    """The run's execution modes: on resume those its checkpoint recorded (``checkpointed``; ``execution.json``
    is rewritten from it when deleted or edited, with a warning), else read from ``execution.json``, else
    resolved (explicit, cached, or calibrated now) and written there before the first step. Applies the allocator."""
    alloc = allocator.configure() if device.type == "cpu" else allocator.state()
    path = run_dir / EXECUTION_FILE
    if checkpointed is not None:
        record = _from_checkpoint(path, checkpointed)
    elif path.is_file():
        record = store.read_json(path, fix=f"delete {path} to choose the modes again (the run then continues in the "
                                           "modes chosen now), or restore it from version control")
    else:
        record = None
    if record is not None:
        record["train"]["source"], record["eval"]["source"] = "recorded", "recorded"
        record["allocator_now"] = alloc
        now = norm_kernel_state(device, record["train"]["mode"])
        if "norm_kernel" in record and now != record["norm_kernel"]:
            log.warning("%s trained its BatchNorm layers with %s, this process has %s: the resumed epochs round "
                        "differently from an uninterrupted run", run_dir, record["norm_kernel"], now)
        record["norm_kernel_now"] = now
        return record
    memory_format = _memory_format(config)
    train = resolve_train_mode(config, model, ds.num_classes, device)
    train_mode = train["mode"]
    # Evaluation follows the run's choice where it is explicit; "auto" calibrates inference separately.
    eval_precision = "auto" if config.precision == "auto" else ("bf16" if train_mode["precision"] == "bf16" else "fp32")
    eval_ = resolve_eval_mode(model, batch_size=config.eval_batch_size, device=device, precision=eval_precision,
                              memory_format=memory_format, num_classes=ds.num_classes)
    record = dict(train=train, eval=eval_, allocator=alloc, device=str(device), machine=execution.machine_key(device),
                  torch=str(torch.__version__), norm_kernel=norm_kernel_state(device, train_mode))
    store.write_json(path, record)  # through the store: a full disk is one line naming the file
    return record


def _modes(record: Any) -> tuple | None:
    """(train mode, eval mode) of an execution record; None for anything else."""
    if isinstance(record, dict) and isinstance(record.get("train"), dict) and isinstance(record.get("eval"), dict):
        return record["train"].get("mode"), record["eval"].get("mode")
    return None


def _from_checkpoint(path: Path, checkpointed: dict) -> dict:
    """The execution record a resumed run's ``last.pt`` holds; ``execution.json`` made to match it."""
    record = json.loads(json.dumps(checkpointed))  # a copy: the sources are overwritten by the caller
    try:
        on_disk = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        on_disk = "unreadable"
    if _modes(on_disk) != _modes(record):
        why = "is missing" if on_disk is None else "is unreadable" if on_disk == "unreadable" else "disagrees with it"
        log.warning("%s %s; the run continues in the execution modes its checkpoint %s recorded (train %s, eval %s) "
                    "and the file is rewritten from it", path, why, runs.LAST, record["train"]["mode"],
                    record["eval"]["mode"])
        store.write_json(path, {k: v for k, v in record.items() if not k.endswith("_now")})
    return record


def norm_kernel_state(device: torch.device, train_mode: dict) -> str:
    """Which BatchNorm the training step runs: our kernel, or ATen and why (accel/norm_kernel.py)."""
    if device.type != "cpu":
        return f"aten (device {device.type})"
    if train_mode["memory_format"] != "channels_last":
        return "aten (NCHW training)"
    return norm_kernel.status()


def percent(v) -> str:
    return "-" if v is None else f"{v:.2f} %"


def arch_record(config: TrainConfig, ds) -> dict[str, Any]:
    # Lets models.load_checkpoint rebuild the exact architecture from best.pt / last.pt.
    return {"name": config.model, "options": model_options(config, ds.num_classes)}


def process_runtime(run_dir: Path, device: torch.device, *, resumed: bool) -> dict[str, Any]:
    """This process's runtime record; resuming under another thread count warns (results will differ)."""
    now = store.runtime_record(device)
    recorded = (store.read_runtime(run_dir) or {}).get("runtime") if resumed else None
    if not recorded:
        return now
    if recorded.get("threads") != now["threads"]:
        log.warning("%s was trained with %s torch threads, this process has %d: float sums depend on the thread count, "
                    "so the resumed epochs are not bit-identical to an uninterrupted run; run with "
                    "OMP_NUM_THREADS=%s to match", run_dir, recorded.get("threads"), now["threads"], recorded.get("threads"))
    differs = {k: v for k, v in now.items() if recorded.get(k) != v}
    if not differs:
        return recorded
    return dict(recorded, resumed_with=list(recorded.get("resumed_with", [])) + [differs])


def warn_other_threads(summary: dict[str, Any]) -> None:
    """A finished run read back (re-rendered) under another torch thread count than it trained with says so:
    its numbers are those of its own thread count, which a retrain here would not reproduce bit for bit."""
    trained = (summary.get("runtime") or {}).get("threads")
    now = torch.get_num_threads()
    if trained is not None and trained != now:
        warnings.warn(f"run {summary.get('run_id')} was trained with {trained} torch thread(s), this process has {now}: "
                      f"its numbers are those of {trained} thread(s); a retrain here would round differently",
                      RuntimeWarning, stacklevel=3)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys)


def fork_command(config: TrainConfig) -> str:
    """The ``micronet train`` command that trains ``config`` as its own run."""
    base = TrainConfig.from_profile(config.profile).to_dict() if config.profile != "custom" else {}
    sets = []
    for key, value in config.to_dict().items():
        if key != "profile" and base.get(key) != value:
            text = "none" if value is None else ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)
            sets.append(f"--set {key}={text}")
    return " ".join([f"micronet train --profile {config.profile if config.profile != 'custom' else 'paper'}", *sets])
