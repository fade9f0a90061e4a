"""``fit(config)``: the training loop, top to bottom (docs/method.md §5, §6, §8.4; STYLE.md points 9-10).

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
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import micronet_lib
from micronet_lib.tf32 import fp32_mode, tf32_flags
from micronet_lib.train import runs, store
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.schedule import lr_at
from micronet_lib.train.setup import (
    autocast,
    build_training_model,
    check_runtime,
    data_fingerprint,
    make_optimizer,
    model_options,
    prepare_data,
    resolve_device,
    seed_for,
)

__all__ = ["fit", "resume", "NonFiniteLossError", "prepare_data", "build_training_model", "make_optimizer"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stopped and its last good checkpoint was kept."""


# ---------------------------------------------------------------------- epoch pieces
def _batch_images(pipeline, images: torch.Tensor, idx: torch.Tensor, copy: torch.Tensor, n_copies: int, g) -> torch.Tensor:
    """Augment the batch on uint8; samples from different copies use their copy's policy set (§5.2)."""
    if n_copies == 1:
        return pipeline(images[idx], copy=0, generator=g)
    out = None
    for c in range(n_copies):
        sel = copy == c
        if not bool(sel.any()):
            continue
        part = pipeline(images[idx[sel]], copy=c, generator=g)
        if out is None:
            out = torch.empty((len(idx), *part.shape[1:]), dtype=part.dtype)
        out[sel] = part
    return out


def _mix(config: TrainConfig, x, y, g):
    """CutMix (the authors: every batch, docs/method.md §6.4) or Mixup, with probability ``mix_prob``."""
    from micronet_lib.regularizers import cutmix, mixup

    if config.mix == "none":
        return x, y, None, 1.0
    if config.mix == "cutmix":
        x, y_a, y_b, lam = cutmix(x, y, alpha=config.mix_alpha, prob=config.mix_prob, generator=g)
    elif config.mix_prob < 1 and float(torch.rand((), generator=g)) >= config.mix_prob:
        return x, y, None, 1.0
    else:
        x, y_a, y_b, lam = mixup(x, y, alpha=config.mix_alpha, generator=g)
    return x, y_a, (None if float(lam) == 1.0 else y_b), float(lam)


def _topk_hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit = top5 == y.view(-1, 1)
    return hit[:, 0].float(), hit.any(dim=1).float()


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{b}": getattr(m, b).detach().clone()
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for b in ("running_mean", "running_var", "num_batches_tracked")
        if getattr(m, b, None) is not None
    }


def _restore_buffers(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, value in saved.items():
            model.get_buffer(key).copy_(value)


def _evaluate_epoch(config, model, ds, device, *, cycle: int, epoch: int, progress: bool):
    """Val/test metrics and the evaluated weights; BN re-estimation leaves the training stats untouched."""
    from micronet_lib.evaluate import evaluate, recalibrate_bn

    saved = _bn_buffers(model) if config.bn_recalibrate_images else None
    if saved is not None:
        n = min(config.bn_recalibrate_images, len(ds.train))
        recalibrate_bn(model, ds, n_images=n, batch_size=config.eval_batch_size, device=str(device),
                       seed=seed_for(config.seed, cycle, epoch, 3) % (2**31))
    kw = dict(batch_size=config.eval_batch_size, device=str(device), precision="bf16" if config.precision == "bf16" else "fp32",
              channels_last=config.channels_last, progress=False, allow_tf32=config.allow_tf32)
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        if split == "val" and ds.val is None:
            out.update(val_top1=None, val_top5=None, val_loss=None)
            continue
        r = evaluate(model, ds, split, **kw)
        out.update({f"{split}_top1": float(r.top1), f"{split}_top5": float(r.top5), f"{split}_loss": float(r.loss)})
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if saved is not None:
        _restore_buffers(model, saved)
    return out, state


# ---------------------------------------------------------------------- summary
def _summary(config, run_dir: Path, st: dict[str, Any], *, status: str, data_desc: str, reason: str | None = None):
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
    for split in ("val", "test"):
        for k in ("top1", "top5", "loss"):
            out[f"final_{split}_{k}"] = last.get(f"{split}_{k}")
            out[f"best_{split}_{k}"] = best.get(f"{split}_{k}")
    return out


def _mark_stopped(config, run_dir, st, data_desc, message):
    runs.write_summary(run_dir, _summary(config, run_dir, st, status="stopped", data_desc=data_desc, reason=message))


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
            raise store.TrainingInterrupted(run_dir, _checkpointed_epochs(run_dir), config.total_epochs) from None


_STARTS = ("last", "previous", "over")


def _checkpointed_epochs(run_dir: Path) -> int:
    try:
        return int(runs.load_checkpoint(run_dir / runs.LAST)["global_epoch"])
    except (ValueError, KeyError):
        return 0


def _fit_locked(config: TrainConfig, run_dir: Path, *, progress: bool, start: str) -> runs.RunSummary:
    from tqdm.auto import tqdm

    from micronet_lib.augment import build_pipeline
    from micronet_lib.pruning import apply_masks, attach_mask, prune_to_rate
    from micronet_lib.regularizers import make_loss, orthogonality_penalty

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
        _repair_finished(run_dir, ckpt)
        store.restore_config(run_dir, config)
        return finished

    # --- setup: everything that can fail fast, before data is read
    device = resolve_device(config.device)
    check_runtime(config, device)
    build_pipeline(config.augment, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # a bad name fails before data loads
    ds = prepare_data(config)
    data_id = data_fingerprint(ds)
    if ckpt is not None and ckpt["data_id"] != data_id:
        raise ValueError(f"{run_dir}: the data changed since the checkpoint ({ckpt['data_id']} → {data_id})")
    pipeline = build_pipeline(config.augment, mean=ds.mean, std=ds.std)
    n_copies = int(pipeline.copies_per_epoch)
    model = build_training_model(config, ds.num_classes)
    loss_fn = make_loss(config.loss, num_classes=ds.num_classes, epsilon=config.loss_epsilon)  # the stage's ε (§6.2)
    runtime = _runtime(run_dir, device, resumed=ckpt is not None)
    store.write_record(run_dir, config, runtime)

    # --- state: fresh, or from the checkpoint (strict, masks re-attached from the saved buffers)
    from micronet_lib.models.released import load_into

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
        history = _restore_history(run_dir, ckpt)
        log.info("resuming %s after cycle %d epoch %d", run_dir.name, st["cycle"] + 1, st["epoch"] + 1)
    elif (run_dir / "metrics.jsonl").exists():
        (run_dir / "metrics.jsonl").unlink()  # a run killed before its first checkpoint starts over
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if config.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    images, labels, n_train = ds.train.images, ds.train.labels, len(ds.train)

    start_cycle = st["cycle"] + (1 if st["epoch"] == config.epochs_per_cycle - 1 else 0)
    for cycle in range(start_cycle, config.cycles):
        first_epoch = st["epoch"] + 1 if cycle == st["cycle"] and st["epoch"] < config.epochs_per_cycle - 1 else 0
        if first_epoch == 0:
            # --- new cycle (docs/method.md §5.4, §8.4): masks from the current (last-epoch) weights, then the
            # previous cycle's best weights with those masks; a fresh optimiser and cosine.
            if config.prune_rates is not None:
                masks = prune_to_rate(model, float(config.prune_rates[cycle]), scope=config.prune_scope,
                                      ties=config.prune_ties)
                if cycle > 0 and st["best_state"] is not None:
                    load_into(model, st["best_state"], source=f"best of cycle {cycle}")
                    for key, mask in masks.items():  # the new masks over the reloaded weights
                        attach_mask(model.get_submodule(key[: -len(".mask")]), mask)
                log.info("cycle %d: pruned to %.2f %% (%s)", cycle + 1, config.prune_rates[cycle], config.prune_scope)
            if st["best"] is not None and cycle > 0:
                st["cycle_best"].append(st["best"])
            st.update(best=None, best_state=None)
            opt_state = None
        optimizer = make_optimizer(config, model)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
            opt_state = None

        for epoch in range(first_epoch, config.epochs_per_cycle):
            global_epoch = cycle * config.epochs_per_cycle + epoch
            # --- randomness of this epoch, independent of how we got here (exact resume)
            g = torch.Generator().manual_seed(seed_for(config.seed, cycle, epoch, 1))
            torch.manual_seed(seed_for(config.seed, cycle, epoch, 2))
            lr = lr_at(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_fn.update_similarity(model)  # weighted LS: S from the classifier, once per epoch (§6.2)
            model.train()
            order = torch.randperm(n_copies * n_train, generator=g)
            sums = dict(loss=0.0, loss_cls=0.0, loss_ortho=0.0, top1=0.0, top5=0.0, n=0)
            t0 = time.perf_counter()
            bar = tqdm(order.split(config.batch_size), desc=f"cycle {cycle + 1}/{config.cycles} epoch {epoch + 1}/"
                       f"{config.epochs_per_cycle}", disable=not progress, leave=False)
            for batch_in_epoch, flat in enumerate(bar):
                idx, copy = flat % n_train, flat // n_train
                x = _batch_images(pipeline, images, idx, copy, n_copies, g)
                x, y_a, y_b, lam = _mix(config, x, labels[idx], g)
                x = x.to(device, non_blocking=True)
                if config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y_a = y_a.to(device)
                y_b = y_b.to(device) if y_b is not None else None
                # --- forward, loss + λ·ortho (docs/method.md §5.5)
                with autocast(config, device):
                    logits = forward(x)
                # fp32 loss under autocast; a float64 model (tests/test_fidelity.py) keeps float64
                loss_cls = loss_fn(logits if logits.dtype == torch.float64 else logits.float(), y_a, y_b, lam)
                ortho = (orthogonality_penalty(model, layers=config.ortho_layers) if config.ortho_coef > 0
                         else torch.zeros((), device=device))
                loss = loss_cls + config.ortho_coef * ortho
                value = float(loss.detach())
                if not math.isfinite(value):
                    message = (f"non-finite loss ({value}) at cycle {cycle + 1} epoch {epoch + 1} step {batch_in_epoch + 1} "
                               f"(global step {st['step'] + 1}); " + (f"the last good checkpoint {run_dir / runs.LAST} was kept"
                               if (run_dir / runs.LAST).exists() else "no checkpoint had been written yet"))
                    log.error(message)
                    _mark_stopped(config, run_dir, st, ds.description, message)
                    raise NonFiniteLossError(message)
                # --- backward, step, masks
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                apply_masks(model)
                st["step"] += 1
                # --- log (train accuracy is λ-weighted over the two CutMix labels)
                with torch.no_grad():
                    h1a, h5a = _topk_hits(logits.detach().float(), y_a)
                    if y_b is not None:
                        h1b, h5b = _topk_hits(logits.detach().float(), y_b)
                        h1a, h5a = lam * h1a + (1 - lam) * h1b, lam * h5a + (1 - lam) * h5b
                b = len(idx)
                sums["n"] += b
                sums["loss"] += value * b
                sums["loss_cls"] += float(loss_cls.detach()) * b
                sums["loss_ortho"] += float(ortho.detach()) * b
                sums["top1"] += float(h1a.sum())
                sums["top5"] += float(h5a.sum())
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.4g}")
            bar.close()
            train_seconds = time.perf_counter() - t0

            # --- epoch end: masks, evaluation, selection, metrics line, checkpoint
            apply_masks(model)
            t1 = time.perf_counter()
            metrics, eval_state = _evaluate_epoch(config, model, ds, device, cycle=cycle, epoch=epoch, progress=progress)
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
                runs.save_checkpoint(run_dir / runs.BEST, dict(model=eval_state, arch=_arch(config, ds), best=st["best"],
                                                               config=config.to_dict(), data_id=data_id))
            record["selected"] = st["best"]["cycle"] == cycle + 1 and st["best"]["epoch"] == epoch + 1
            st.update(cycle=cycle, epoch=epoch, seconds=st["seconds"] + record["seconds"])
            runs.append_metrics(run_dir, record)
            history.append(record)
            log.info("cycle %d epoch %d: loss %.4f train %.2f %% val %s test %.2f %% (%.0f img/s)", cycle + 1, epoch + 1,
                     record["loss"], record["train_top1"], _fmt(metrics["val_top1"]), metrics["test_top1"],
                     record["images_per_s"])
            last_of_cycle = epoch == config.epochs_per_cycle - 1
            if (epoch + 1) % config.checkpoint_every == 0 or last_of_cycle:
                runs.save_checkpoint(run_dir / runs.LAST, dict(
                    model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                    optimizer=optimizer.state_dict(), arch=_arch(config, ds),
                    cycle=cycle, epoch=epoch, global_epoch=global_epoch + 1, step=st["step"], seconds=st["seconds"],
                    best=st["best"], best_state=st["best_state"], cycle_best=st["cycle_best"],
                    rng=runs.rng_state(), config=config.to_dict(), data_id=data_id, history=list(history),
                    library_version=micronet_lib.__version__,
                ))

    summary = _summary(config, run_dir, st, status="finished", data_desc=ds.description)
    runs.write_summary(run_dir, summary)
    return summary


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f} %"


def _arch(config: TrainConfig, ds) -> dict[str, Any]:
    # Lets models.load_checkpoint rebuild the exact architecture from best.pt / last.pt.
    return {"name": config.model, "options": model_options(config, ds.num_classes)}


# ---------------------------------------------------------------------- run-store repairs
def _runtime(run_dir: Path, device: torch.device, *, resumed: bool) -> dict[str, Any]:
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


def _restore_history(run_dir: Path, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """``metrics.jsonl`` through the checkpoint's epoch: kept, or rebuilt from the copy inside ``last.pt``."""
    through = ckpt["global_epoch"]
    path = run_dir / "metrics.jsonl"
    try:
        rows = [r for r in store.read_metrics(run_dir) if r["global_epoch"] <= through]
        problem = None if path.exists() else f"{path} is missing"
    except store.RunStoreError as exc:
        rows, problem = None, str(exc).split(";")[0]
    saved = ckpt.get("history")
    if saved is not None:
        if rows != saved:
            log.warning("%s; rebuilt its %d epoch line(s) from %s", problem or f"{path} disagrees with {runs.LAST}",
                        len(saved), runs.LAST)
        store.write_metrics(run_dir, saved)
        return list(saved)
    if rows is None or len(rows) < through:  # a checkpoint older than the saved history: nothing to rebuild from
        raise store.RunStoreError(f"{problem or f'{path} lacks epochs that {runs.LAST} covers'} and {runs.LAST} holds no "
                                  f"copy of it; start over with `{store.resume_command(run_dir, '--restart')}`")
    store.write_metrics(run_dir, rows)
    return rows


def _repair_finished(run_dir: Path, ckpt: dict[str, Any]) -> None:
    """A finished run re-run: its history and ``best.pt`` are verified, and rebuilt from ``last.pt`` if broken."""
    _restore_history(run_dir, ckpt)
    best = run_dir / runs.BEST
    try:
        runs.load_checkpoint(best)
        return
    except store.RunStoreError as exc:
        problem = str(exc).split(";")[0]
    if ckpt.get("best_state") is None:
        raise store.RunStoreError(f"{problem}; {runs.LAST} holds no selected weights to rebuild it from: start over "
                                  f"with `{store.resume_command(run_dir, '--restart')}`")
    runs.save_checkpoint(best, dict(model=ckpt["best_state"], arch=ckpt["arch"], best=ckpt["best"], config=ckpt["config"],
                                    data_id=ckpt["data_id"]))
    log.warning("%s; rebuilt it from the selected weights stored in %s", problem, runs.LAST)


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


def resume(run_dir: str | Path, *, progress: bool = True, wait: bool = True, start: str = "last") -> runs.RunSummary:
    """Continue the run in ``run_dir`` with the config stored there (``micronet train --resume``).

    A ``config.json`` edited since the run started is refused with the command that trains the edited
    config as a new run; a corrupt one is replaced by the copy inside ``last.pt``.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    last = run_dir / runs.LAST
    if not path.is_file():
        raise store.RunStoreError(f"{run_dir} is not a run folder (no config.json); give the folder printed by "
                                  "`micronet train`, e.g. results/runs/<hash>")
    try:
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
