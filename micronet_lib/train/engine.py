"""``fit(config)``: the training loop, top to bottom (docs/method.md §5, §6, §8.4).

setup (run folder, device, data, model, loss, augmentation) → resume from ``last.pt`` if present →
for each cycle: [prune + reload the previous cycle's best weights] → fresh optimiser → for each
epoch: lr → batches (augment uint8 with a seeded generator, CutMix/Mixup) → forward → loss +
λ·ortho → backward → step → re-apply masks → epoch end: evaluate (BN re-estimated on a copy of the
statistics if asked), select on ``select_on``, one JSON line, atomic checkpoint.

Reproducibility: every epoch draws its randomness (data order, augmentation, mixing, dropout, the
orthogonality vectors) from generators seeded by ``(seed, cycle, epoch)``, so a run resumed from an
epoch-end checkpoint replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

import micronet_lib
from micronet_lib.accel import execution
from micronet_lib.accel.tf32 import fp32_mode
from micronet_lib.devices import resolve_device
from micronet_lib.train import runs
from micronet_lib.runstore import store
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.epoch import batch_images, evaluate_epoch, mix_batch, topk_hits
from micronet_lib.train.records import (
    arch_record,
    checkpointed_epochs,
    config_diff,
    execution_record,
    fork_command,
    mark_stopped,
    percent,
    process_runtime,
    run_summary,
    warn_other_threads,
)
from micronet_lib.train.schedule import lr_at
from micronet_lib.train.step import make_step
from micronet_lib.train.setup import (
    build_training_model,
    check_runtime,
    data_fingerprint,
    make_optimizer,
    prepare_data,
    seed_for,
)
from micronet_lib.augment import build_pipeline
from micronet_lib.models.checkpoints import load_into
from micronet_lib import pruning, regularizers  # by module: a test may replace one of their functions

__all__ = ["fit", "resume", "run_or_load", "NonFiniteLossError", "prepare_data", "build_training_model", "make_optimizer"]

log = logging.getLogger(__name__)

FINITE_CHECK_EVERY = 50  # steps between host reads of the loss (each read waits for the device)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped and its last good checkpoint was kept."""


# ---------------------------------------------------------------------- the loop
def fit(config: TrainConfig, run_dir: str | Path | None = None, *, progress: bool = True,
        runs_dir: str | Path | None = None, wait: bool = True, start: str = "last") -> runs.RunSummary:
    """Train (or resume) ``config`` in ``run_dir`` (default ``results/runs/<config hash>/``); return the summary.

    The run folder is locked for the whole call (:func:`store.lock`): with ``wait`` a second process
    waits for the first, else it stops with an error naming the holder. ``start``: ``"last"`` resumes
    from ``last.pt`` if present, ``"previous"`` from ``last.prev.pt`` (the way out of a corrupt
    ``last.pt``), ``"over"`` deletes the run's outputs first. Ctrl-C raises
    :class:`store.TrainingInterrupted` saying how to resume. The whole run, evaluation included, executes
    under ``fp32_mode(allow_tf32=config.allow_tf32)``: TF32 off on CUDA unless asked for (the summary's
    ``tf32`` records the flags in force).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"fit expects a TrainConfig, got {type(config).__name__}")
    if start not in _STARTS:
        raise ValueError(f"fit(start={start!r}); allowed: {', '.join(map(repr, _STARTS))}")
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(config, runs_dir)
    with store.lock(run_dir, wait=wait), fp32_mode(allow_tf32=config.allow_tf32):
        try:
            return _fit_locked(config, run_dir, progress=progress, start=start)
        except store.TrainingInterrupted:
            raise
        except KeyboardInterrupt:
            raise store.TrainingInterrupted(run_dir, checkpointed_epochs(run_dir), config.total_epochs) from None


_STARTS = ("last", "previous", "over")


def _fit_locked(config: TrainConfig, run_dir: Path, *, progress: bool, start: str) -> runs.RunSummary:
    from tqdm.auto import tqdm

    if start == "over":
        store.start_over(run_dir)
    elif start == "previous":
        store.use_previous(run_dir)
    ckpt = runs.load_checkpoint(run_dir / runs.LAST) if (run_dir / runs.LAST).exists() else None
    if ckpt is not None and ckpt["config"] != config.to_dict():
        raise store.RunStoreError(
            f"{run_dir} holds a run of a different config ({config_diff(ckpt['config'], config.to_dict())}); "
            f"train this config in its own folder (`{fork_command(config)}`) or resume that run with "
            f"`{store.resume_command(run_dir)}`")
    try:
        finished = runs.read_summary(run_dir)
    except store.RunStoreError as exc:
        if ckpt is None:
            raise
        log.warning("%s; rewriting it from %s", str(exc).split(";")[0], runs.LAST)
        finished = None
    if ckpt is not None and finished is not None and finished.get("status") == "finished":
        store.repair_finished(run_dir, ckpt)
        store.restore_config(run_dir, config)
        return finished

    # --- setup: everything that can fail fast, before data is read
    device = torch.device(resolve_device(config.device))
    check_runtime(config, device)
    build_pipeline(config.augment, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # a bad name fails before data loads
    ds = prepare_data(config)
    data_id = data_fingerprint(ds)
    if ckpt is not None and ckpt["data_id"] != data_id:
        raise ValueError(f"{run_dir}: the data changed since the checkpoint ({ckpt['data_id']} → {data_id})")
    pipeline = build_pipeline(config.augment, mean=ds.mean, std=ds.std)
    n_copies = int(pipeline.copies_per_epoch)
    model = build_training_model(config, ds.num_classes)
    loss_fn = regularizers.make_loss(config.loss, num_classes=ds.num_classes, epsilon=config.loss_epsilon)  # the stage's ε (§6.2)
    runtime = process_runtime(run_dir, device, resumed=ckpt is not None)
    if ckpt is not None and not ckpt["verified"]:  # store.load_checkpoint warned; the run keeps the fact
        runtime = dict(runtime, unverified_checkpoint=f"{runs.LAST} of global epoch {ckpt['global_epoch']} was resumed "
                       f"without a checksum ({store.checksums.MANIFEST} had no entry for it)")
    store.write_record(run_dir, config, runtime)

    # --- state: fresh, or from the checkpoint (strict, masks re-attached from the saved buffers)

    st: dict[str, Any] = dict(cycle=0, epoch=-1, step=0, seconds=0.0, best=None, best_state=None,
                              cycle_best=[], data_id=data_id, runtime=runtime)
    history: list[dict[str, Any]] = []
    opt_state = None
    if ckpt is not None:
        load_into(model, ckpt["model"], source=str(run_dir / runs.LAST))
        st.update(cycle=ckpt["cycle"], epoch=ckpt["epoch"], step=ckpt["step"], seconds=ckpt["seconds"],
                  best=ckpt["best"], best_state=ckpt["best_state"], cycle_best=list(ckpt["cycle_best"]))
        opt_state = ckpt["optimizer"]
        runs.set_rng_state(ckpt["rng"])
        history = store.restore_history(run_dir, ckpt)
        log.info("resuming %s after cycle %d epoch %d", run_dir.name, st["cycle"] + 1, st["epoch"] + 1)
    elif (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()  # a run killed before its first checkpoint starts over
    model.to(device)
    st["execution"] = execution_record(config, run_dir, model, ds, device,
                                       checkpointed=ckpt.get("execution") if ckpt is not None else None)
    mode = execution.ExecutionMode.from_dict(st["execution"]["train"]["mode"])
    if mode.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if mode.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=mode.precision == "fp16")
    images, labels, n_train = ds.train.images, ds.train.labels, len(ds.train)
    if device.type == "cuda":  # augment on the device: the same tensor ops run on CUDA tensors
        images, labels = images.pin_memory().to(device, non_blocking=True), labels.to(device)

    start_cycle = st["cycle"] + (1 if st["epoch"] == config.epochs_per_cycle - 1 else 0)
    for cycle in range(start_cycle, config.cycles):
        first_epoch = st["epoch"] + 1 if cycle == st["cycle"] and st["epoch"] < config.epochs_per_cycle - 1 else 0
        if first_epoch == 0:
            # --- new cycle (docs/method.md §5.4, §8.4): masks from the current (last-epoch) weights, then the
            # previous cycle's best weights with those masks; a fresh optimiser and cosine.
            if config.prune_rates is not None:
                masks = pruning.prune_to_rate(model, float(config.prune_rates[cycle]), scope=config.prune_scope,
                                      ties=config.prune_ties)
                if cycle > 0 and st["best_state"] is not None:
                    load_into(model, st["best_state"], source=f"best of cycle {cycle}")
                    for key, mask in masks.items():  # the new masks over the reloaded weights
                        pruning.attach_mask(model.get_submodule(key[: -len(".mask")]), mask)
                log.info("cycle %d: pruned to %.2f %% (%s)", cycle + 1, config.prune_rates[cycle], config.prune_scope)
            if st["best"] is not None and cycle > 0:
                st["cycle_best"].append(st["best"])
            st.update(best=None, best_state=None)
            opt_state = None
        optimizer = make_optimizer(config, model)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
            opt_state = None
        # forward, loss + λ·ortho (docs/method.md §5.5), backward, step, masks: eager, or captured (train/step.py)
        train_step = make_step(config.capture_step, model, forward, loss_fn, optimizer, config=config, mode=mode,
                               device=device, scaler=scaler)

        for epoch in range(first_epoch, config.epochs_per_cycle):
            global_epoch = cycle * config.epochs_per_cycle + epoch
            # --- randomness of this epoch, independent of how we got here (exact resume)
            g = torch.Generator().manual_seed(seed_for(config.seed, cycle, epoch, 1))
            torch.manual_seed(seed_for(config.seed, cycle, epoch, 2))
            lr = lr_at(config, epoch)
            train_step.set_lr(lr)
            loss_fn.update_similarity(model)  # weighted LS: S from the classifier, once per epoch (§6.2)
            model.train()
            order = torch.randperm(n_copies * n_train, generator=g)
            # Running sums stay on the device (no host read per step); the loss is checked every
            # FINITE_CHECK_EVERY steps and at the epoch end.
            sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("loss", "loss_cls", "loss_ortho", "top1", "top5")}
            sums["n"] = 0
            first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # index of the first non-finite step
            bad_value = torch.zeros((), dtype=torch.float32, device=device)
            t0 = time.perf_counter()
            bar = tqdm(order.split(config.batch_size), desc=f"cycle {cycle + 1}/{config.cycles} epoch {epoch + 1}/"
                       f"{config.epochs_per_cycle}", disable=not progress, leave=False)
            for batch_in_epoch, flat in enumerate(bar):
                idx, copy = flat % n_train, flat // n_train
                x = batch_images(pipeline, images, idx, copy, n_copies, g)
                x, y_a, y_b, lam = mix_batch(config, x, labels[idx], g)
                x = x.to(device, non_blocking=True)
                if mode.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y_a = y_a.to(device, non_blocking=True)
                y_b = y_b.to(device, non_blocking=True) if y_b is not None else None
                # --- forward, loss + λ·ortho, backward, step, masks (docs/method.md §5.5)
                logits, loss_cls, ortho, loss = train_step(x, y_a, y_b, lam)
                detached = loss.detach()
                newly_bad = (first_bad < 0) & ~torch.isfinite(detached)
                first_bad = torch.where(newly_bad, batch_in_epoch, first_bad)
                bad_value = torch.where(newly_bad, detached.float(), bad_value)
                st["step"] += 1
                # --- log (train accuracy is λ-weighted over the two CutMix labels)
                with torch.no_grad():
                    h1a, h5a = topk_hits(logits.detach().float(), y_a)
                    if y_b is not None:
                        h1b, h5b = topk_hits(logits.detach().float(), y_b)
                        h1a, h5a = lam * h1a + (1 - lam) * h1b, lam * h5a + (1 - lam) * h5b
                b = len(idx)
                sums["n"] += b
                sums["loss"] += detached * b
                sums["loss_cls"] += loss_cls.detach() * b
                sums["loss_ortho"] += ortho.detach() * b
                sums["top1"] += h1a.sum()
                sums["top5"] += h5a.sum()
                if (batch_in_epoch + 1) % FINITE_CHECK_EVERY == 0:
                    _stop_if_non_finite(config, run_dir, st, ds, first_bad, bad_value, cycle=cycle, epoch=epoch,
                                        steps_done=batch_in_epoch)
                    bar.set_postfix(loss=f"{float(sums['loss']) / sums['n']:.3f}", lr=f"{lr:.4g}")
            bar.close()
            _stop_if_non_finite(config, run_dir, st, ds, first_bad, bad_value, cycle=cycle, epoch=epoch,
                                steps_done=batch_in_epoch)
            sums = {k: (float(v) if torch.is_tensor(v) else v) for k, v in sums.items()}
            train_seconds = time.perf_counter() - t0

            # --- epoch end: masks, evaluation, selection, metrics line, checkpoint
            pruning.apply_masks(model)
            t1 = time.perf_counter()
            metrics, eval_state = evaluate_epoch(config, model, ds, device, cycle=cycle, epoch=epoch, progress=progress,
                                                  eval_mode=st["execution"]["eval"]["mode"])
            eval_seconds = time.perf_counter() - t1
            n = max(1, sums["n"])
            record = dict(
                cycle=cycle + 1, epoch=epoch + 1, global_epoch=global_epoch + 1, lr=lr, step=st["step"],
                loss=sums["loss"] / n, loss_cls=sums["loss_cls"] / n, loss_ortho=sums["loss_ortho"] / n,
                train_top1=100 * sums["top1"] / n, train_top5=100 * sums["top5"] / n, **metrics,
                images_per_s=sums["n"] / max(train_seconds, 1e-9), seconds=train_seconds + eval_seconds,
                eval_seconds=eval_seconds,
            )
            score = None if config.select_on == "last" else metrics[f"{config.select_on}_top1"]
            if st["best"] is None or score is None or score > st["best"]["score"]:
                st["best"] = dict(score=score, cycle=cycle + 1, epoch=epoch + 1, **metrics)
                st["best_state"] = eval_state
                runs.save_checkpoint(run_dir / runs.BEST, dict(model=eval_state, arch=arch_record(config, ds), best=st["best"],
                                                               config=config.to_dict(), data_id=data_id))
            record["selected"] = st["best"]["cycle"] == cycle + 1 and st["best"]["epoch"] == epoch + 1
            st.update(cycle=cycle, epoch=epoch, seconds=st["seconds"] + record["seconds"])
            runs.append_metrics(run_dir, record)
            history.append(record)
            log.info("cycle %d epoch %d: loss %.4f train %.2f %% val %s test %.2f %% (%.0f img/s)", cycle + 1, epoch + 1,
                     record["loss"], record["train_top1"], percent(metrics["val_top1"]), metrics["test_top1"],
                     record["images_per_s"])
            last_of_cycle = epoch == config.epochs_per_cycle - 1
            if (epoch + 1) % config.checkpoint_every == 0 or last_of_cycle:
                runs.save_checkpoint(run_dir / runs.LAST, dict(
                    model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                    optimizer=optimizer.state_dict(), arch=arch_record(config, ds),
                    cycle=cycle, epoch=epoch, global_epoch=global_epoch + 1, step=st["step"], seconds=st["seconds"],
                    best=st["best"], best_state=st["best_state"], cycle_best=st["cycle_best"],
                    rng=runs.rng_state(), config=config.to_dict(), data_id=data_id, history=list(history),
                    library_version=micronet_lib.__version__, execution=st["execution"],
                ))

    summary = run_summary(config, run_dir, st, status="finished", data_desc=ds.description)
    runs.write_summary(run_dir, summary)
    return summary


def _stop_if_non_finite(config, run_dir, st, ds, first_bad, bad_value, *, cycle: int, epoch: int, steps_done: int):
    """Raise NonFiniteLossError (summary marked stopped, last good checkpoint kept) if a step's loss was nan/inf."""
    bad = int(first_bad)  # the one host read: waits for the device
    if bad < 0:
        return
    value = float(bad_value)
    global_step = st["step"] - steps_done + bad
    message = (f"non-finite loss ({value}) at cycle {cycle + 1} epoch {epoch + 1} step {bad + 1} "
               f"(global step {global_step}); " + (f"the last good checkpoint {run_dir / runs.LAST} was kept"
                                                   if (run_dir / runs.LAST).exists() else "no checkpoint had been written yet"))
    log.error(message)
    mark_stopped(config, run_dir, st, ds.description, message)
    raise NonFiniteLossError(message)


def resume(run_dir: str | Path, *, progress: bool = True, wait: bool = True, start: str = "last") -> runs.RunSummary:
    """Continue the run in ``run_dir`` with the config stored there (``micronet train --resume``).

    A ``config.json`` edited since the run started is refused with the command that trains the edited
    config as a new run; a corrupt one is replaced by the copy inside ``last.pt``.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    last = run_dir / runs.LAST
    if not path.is_file() and not last.is_file():
        raise store.RunStoreError(f"{run_dir} is not a run folder (no config.json); give the folder printed by "
                                  "`micronet train`, e.g. results/runs/<hash>")
    try:
        if not path.is_file():
            raise store.RunStoreError(f"{path} is missing")
        data = store.read_json(path, fix=f"restore it, or delete {run_dir} and train the run again")
    except store.RunStoreError as exc:
        if not last.exists():
            raise
        data = runs.load_checkpoint(last)["config"]
        log.warning("%s; using the config stored in %s (config.json is rewritten)", str(exc).split(";")[0], runs.LAST)
    try:
        config = TrainConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise store.RunStoreError(f"{path} is not a valid config ({exc}); restore it, or delete {run_dir} and train the "
                                  "run again") from None
    recorded = (store.read_runtime(run_dir) or {}).get("config_hash")
    if start != "over" and recorded is not None and recorded != config.config_hash():
        original = runs.load_checkpoint(last)["config"] if last.exists() else None
        undo = (f"undo the edit ({config_diff(config.to_dict(), original)})" if original is not None
                else f"undo the edit (the run's config hash is {recorded})")
        raise store.RunStoreError(
            f"{path} was edited after the run started; to train the edited config as a new run: "
            f"`{fork_command(config)}`; to continue this run, {undo}")
    return fit(config, run_dir, progress=progress, wait=wait, start=start)


def run_or_load(
    config: TrainConfig, *, runs_dir: str | Path | None = None, progress: bool = False
) -> runs.RunSummary:
    """A finished run's summary if ``results/runs/<hash>/`` holds one; otherwise train (or resume) it.

    Safe when several processes call it on the same config at once (e.g. a cluster executor): one
    takes the run's lock and trains, the others wait for the lock (with a message naming the holder)
    and then load the finished run, or resume it if the holder died. A finished run whose
    ``metrics.jsonl`` is missing or short is repaired from ``last.pt`` first (``fit``); read back under
    another torch thread count than it trained with, it says so (``warn_other_threads``).
    """
    run_dir = runs.run_dir_for(config, runs_dir)
    try:
        summary = runs.finished_summary(config, runs_dir)
    except store.RunStoreError:
        if not (run_dir / runs.LAST).exists():
            raise
        summary = None  # fit rebuilds a corrupt summary from the checkpoint
    if summary is not None and not (store.history_incomplete(run_dir, summary) and (run_dir / runs.LAST).exists()):
        warn_other_threads(summary)
        return summary
    if summary is None and os.environ.get(runs.NO_TRAINING_ENV):  # a finished run's repair from last.pt is no training
        raise RuntimeError(f"run {run_dir.name} is not among the finished run records in {run_dir.parent}, and a "
                           "re-render (--rerender) never trains; drop --rerender to train it")
    return fit(config, run_dir, progress=progress, wait=True)  # trains, resumes, or repairs from last.pt
