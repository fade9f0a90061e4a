"""Executors: run a list of ``TrainConfig``s whose runs are not finished yet (issue #15).

``run_configs(configs, executor=...)`` is the seam under ``run_or_load``: it reads back every run
whose folder already holds a finished summary, hands the others to the executor, reports one line
per finished run with an overall tqdm bar (runs done / total, ETA), and returns a ``SweepReport``.

- ``InProcess`` (the default): ``run_or_load`` one config after the other in this process; imports
  nothing new.
- ``RayExecutor``: each run is a Ray task with declared resources (``num_gpus=1`` where the cluster
  has GPUs, else ``cpus_per_run`` CPUs) that calls ``run_or_load`` in a worker on the shared run store
  (``MICRONET_RUNS``). Ray is imported only here, lazily (``pip install -e ".[cluster]"``). Retries
  are Ray's: a task whose worker dies is retried up to ``max_retries`` times and, since ``fit``
  resumes from the run's ``last.pt``, continues from its last checkpoint; an exception raised by the
  run itself (bad config, non-finite loss) is not retried (``retry_exceptions=False``) and is
  reported once. Two drivers on one grid rely on the run store's lock inside ``run_or_load``.

``sweep(studies, params, ...)`` builds the grid of notebooks 02–04 (``studies.study_configs``) and
runs it in rounds until nothing new can be built (04's pruning runs need the dense runs first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from micronet_lib.environ import environment
from micronet_lib.train.config import TrainConfig
from micronet_lib.train.engine import run_or_load
from micronet_lib.train import runs
from micronet_lib.train.runs import RUNS_ENV, RunSummary, read_summary, run_dir_for, runs_root
from micronet_lib.experiments import studies as grids  # by module: a test may replace study_configs
from micronet_lib.repo import notebooks_dir

__all__ = ["InProcess", "RayExecutor", "SweepReport", "finished_summary", "make_executor", "run_configs", "sweep",
           "torch_threads", "worker_threads", "EXECUTORS", "RAY_MISSING"]

log = logging.getLogger(__name__)

EXECUTORS = ("inprocess", "ray")
RAY_MISSING = ("the ray executor needs Ray: install the cluster extra with "
               "pip install -c constraints.txt -e \".[cluster]\" (or make setup, which installs it)")


def _stored_summary(config: TrainConfig, runs_dir: str | os.PathLike | None) -> RunSummary | None:
    try:
        return read_summary(run_dir_for(config, runs_dir))
    except ValueError:  # an unreadable summary: the run is submitted, and run_or_load repairs or reports it
        return None


#: The summary of a config's run if its folder holds a finished run of exactly this config; None also for an
#: unreadable summary (the run is submitted, and run_or_load repairs or reports it).
finished_summary = runs.finished_summary_or_none


def _describe(config: TrainConfig) -> str:
    """A short label of what a run varies in the studies (the hash alone says nothing to a reader)."""
    parts = [f"loss={config.loss}", f"ortho={config.ortho_coef:g}", f"augment={config.augment}", f"mix={config.mix}"]
    if config.prune_rates is not None:
        parts.append("prune=" + "/".join(f"{r:g}" for r in config.prune_rates))
    return " ".join(parts + [f"seed={config.seed}"])


def _result_line(summary: Mapping[str, Any]) -> str:
    accs = [f"{name} {summary[key]:.2f} %" for name, key in (("val", "best_val_top1"), ("test", "best_test_top1"))
            if summary.get(key) is not None]
    return f"{summary.get('epochs')}/{summary.get('epochs_total')} epochs, {summary.get('seconds', 0):.1f} s; " + ", ".join(accs)


@contextlib.contextmanager
def run_store_at(runs_dir: str | os.PathLike, workdir: str | os.PathLike | None = None) -> Iterator[None]:
    """Run with ``$MICRONET_RUNS`` = ``runs_dir`` and in ``workdir``: a pruning run's ``init_from``
    (``run:<id>/best.pt``) is resolved against the run store of the process, which must be this sweep's, and a
    relative ``imagefolder:`` dataset path against the working directory, which must be the one the configs
    were built for (``pipeline.notebook_params`` writes that path relative to the notebooks folder)."""
    where = contextlib.chdir(workdir) if workdir is not None else contextlib.nullcontext()
    with environment({RUNS_ENV: str(runs_dir)}), where:
        yield


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch threads (0: leave the count as it is), restored afterwards.

    The thread count is not part of a run's config hash, yet float sums (and so pruning masks) depend on
    it: every executor trains with the profile's ``threads``, as the notebooks do, so one hash means one
    set of numbers whichever executor trained it.
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_threads(threads: int, cpus_per_run: int, *, gpu: bool) -> int:
    """Torch threads of one Ray task: the profile's ``threads`` when it sets one, else the CPUs the task
    reserved (``cpus_per_run``; 0 = torch's default on a GPU task)."""
    if threads:
        if not gpu and threads != cpus_per_run:
            log.warning("runs train with the profile's %d torch thread(s) on %d reserved CPU(s) per run: pass "
                        "--cpus-per-run %d to reserve as many CPUs as threads", threads, cpus_per_run, threads)
        return threads
    return 0 if gpu else cpus_per_run


# ---------------------------------------------------------------------- executors
class InProcess:
    """``run_or_load`` each config in this process, in order (today's behaviour; no extra imports)."""

    name = "inprocess"

    def execute(self, configs: Sequence[TrainConfig], *, runs_dir: Path, workdir: Path | None,
                progress: bool, threads: int = 0) -> Iterator[tuple[TrainConfig, RunSummary | BaseException]]:
        for config in configs:
            try:
                with run_store_at(runs_dir, workdir), torch_threads(threads):
                    yield config, run_or_load(config, runs_dir=runs_dir, progress=progress)
            except Exception as exc:  # the run's own failure: reported once by run_configs
                yield config, exc


def _train_in_worker(config: dict[str, Any], runs_dir: str, workdir: str | None, threads: int) -> dict[str, Any]:
    """The body of one Ray task: ``run_or_load`` in the worker, in the notebooks' working directory
    (a relative ``imagefolder:`` dataset path is relative to it). Returns the summary as a plain dict."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if workdir is not None and not os.path.isdir(workdir):
        raise FileNotFoundError(f"working directory {workdir} does not exist on this node; every node needs the "
                                "project checkout and the run store at the same paths (docs/cluster.md)")
    with run_store_at(runs_dir, workdir):
        return dict(run_or_load(TrainConfig.from_dict(config), runs_dir=runs_dir, progress=False))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(RAY_MISSING) from None
    return ray


class RayExecutor:
    """Each run a Ray task; see the module docstring.

    ``address``: None starts (or joins, with ``RAY_ADDRESS`` set) a cluster the way ``ray.init()``
    does; ``"auto"`` joins the cluster of ``ray start`` on this machine; ``"HOST:PORT"`` a remote
    head. A driver already connected (``ray.is_initialized()``) is used as it is and left connected.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus_per_run: int = 1, max_retries: int = 3) -> None:
        if cpus_per_run < 1 or max_retries < 0:
            raise ValueError(f"cpus_per_run={cpus_per_run} must be >= 1 and max_retries={max_retries} >= 0")
        self.address, self.cpus_per_run, self.max_retries = address, int(cpus_per_run), int(max_retries)

    _owned = False  # this executor called ray.init (and so shuts Ray down in close())

    def _connect(self):
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        # The workers see this driver's MICRONET_* settings (data, cache and asset folders).
        env = {k: v for k, v in os.environ.items() if k.startswith("MICRONET_")}
        # Ray reports usage statistics over the network unless told not to; a sweep sends nothing
        # anywhere unless the user opts in by setting the variable to 1.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(address=self.address, runtime_env={"env_vars": env}, log_to_driver=False)
        except ConnectionError as exc:
            raise RuntimeError(f"no Ray cluster at {self.address or '$RAY_ADDRESS'} ({str(exc).splitlines()[0]}); start one "
                               "with `ray start --head`, or use --executor ray to run a local one") from None
        self._owned = True
        return ray

    def close(self) -> None:
        """Disconnect (and stop a private local cluster) if this executor connected; else nothing."""
        if self._owned:
            _import_ray().shutdown()
            self._owned = False

    def execute(self, configs: Sequence[TrainConfig], *, runs_dir: Path, workdir: Path | None,
                progress: bool, threads: int = 0) -> Iterator[tuple[TrainConfig, RunSummary | BaseException]]:
        if not configs:
            return
        ray = self._connect()  # stays connected across the rounds of a sweep; sweep() calls close()
        gpus = ray.cluster_resources().get("GPU", 0) >= 1
        task = ray.remote(_train_in_worker)
        refs = {}
        for config in configs:
            wants_gpu = gpus and (config.device == "auto" or config.device.startswith("cuda"))
            # Ray's retries: worker death (max_retries); the run's own exceptions are final.
            ref = task.options(name=f"train {config.config_hash()}", num_cpus=self.cpus_per_run,
                               num_gpus=1 if wants_gpu else 0, max_retries=self.max_retries,
                               retry_exceptions=False).remote(
                config.to_dict(), str(runs_dir), None if workdir is None else str(workdir),
                worker_threads(threads, self.cpus_per_run, gpu=wants_gpu))
            refs[ref] = config
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], RunSummary(ray.get(ref))
                except ray.exceptions.RayTaskError as exc:  # the run's own exception, not retried
                    yield refs[ref], exc.cause if isinstance(exc.cause, BaseException) else exc
                except ray.exceptions.RayError as exc:  # worker died more than max_retries times, ...
                    yield refs[ref], exc


def make_executor(spec: str | None, *, cpus_per_run: int = 1, max_retries: int = 3):
    """``None``/``"inprocess"`` → ``InProcess()``; ``"ray"`` / ``"ray:ADDRESS"`` → ``RayExecutor``."""
    if spec in (None, "", "inprocess"):
        return InProcess()
    kind, _, address = spec.partition(":")
    if kind != "ray":
        raise ValueError(f"--executor {spec!r}: allowed: inprocess, ray, ray:auto, ray:HOST:PORT")
    _import_ray()  # fail now, with the install line, not after the grid is built
    return RayExecutor(address or None, cpus_per_run=cpus_per_run, max_retries=max_retries)


# ---------------------------------------------------------------------- driver
@dataclass
class SweepReport:
    """What a sweep did: summaries of finished runs and failures, both keyed by config hash."""

    summaries: dict[str, RunSummary] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    loaded: int = 0      # finished before this call: read back, not submitted
    ran: int = 0         # handed to the executor and finished
    skipped: list[str] = field(default_factory=list)  # stopped runs not resubmitted

    def merge(self, other: "SweepReport") -> None:
        self.summaries.update(other.summaries)
        self.failures.update(other.failures)
        self.loaded += other.loaded
        self.ran += other.ran
        self.skipped += other.skipped


class _Progress:
    """One overall tqdm bar (runs done / total, ETA) and one line per finished run."""

    def __init__(self, enabled: bool, echo: Callable[[str], None] | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc="runs", unit="run", disable=not enabled, dynamic_ncols=True)
        self.echo = echo or log.info
        self.done_count = self.total = 0  # kept here too: a disabled bar counts nothing

    def add(self, n: int) -> None:
        self.total += n
        self.bar.total = self.total
        self.bar.refresh()

    def line(self, text: str) -> None:
        if self.bar.disable:
            self.echo(text)
        else:
            self.bar.write(text)

    def count(self) -> None:
        self.done_count += 1
        self.bar.update(1)

    def done(self, text: str) -> None:
        self.count()
        self.line(f"[{self.done_count}/{self.total}] {text}")

    def close(self) -> None:
        self.bar.close()


def run_configs(configs: Sequence[TrainConfig], *, executor=None, runs_dir: str | os.PathLike | None = None,
                workdir: str | os.PathLike | None = None, progress: bool = False, retry_stopped: bool = True,
                echo: Callable[[str], None] | None = None, threads: int = 0, _bar: _Progress | None = None) -> SweepReport:
    """Finished runs are read back; the others go to ``executor`` (default ``InProcess()``).

    Configs are deduplicated by hash. ``retry_stopped=False`` leaves runs that stopped for a reason of
    their own (a non-finite loss, recorded in their summary) as failures instead of running them again.
    ``workdir`` is the directory runs execute in (a relative ``imagefolder:`` dataset path is taken from
    it); None: the current one. ``threads``: torch threads of every run (0: as the process has them).
    """
    for c in configs:
        if not isinstance(c, TrainConfig):
            raise ValueError(f"run_configs expects TrainConfig objects, got {type(c).__name__}")
    executor = executor or InProcess()
    root = runs_root(runs_dir).resolve()
    unique = list({c.config_hash(): c for c in configs}.values())
    report, todo = SweepReport(), []
    bar = _bar or _Progress(progress, echo)
    bar.add(len(unique))
    for c in unique:
        summary = finished_summary(c, root)
        stopped = _stored_summary(c, root) if summary is None and not retry_stopped else None
        if summary is not None:
            report.summaries[c.config_hash()] = summary
            report.loaded += 1
            bar.count()
        elif stopped is not None and stopped.get("status") == "stopped":
            report.failures[c.config_hash()] = f"stopped earlier: {stopped.get('stopped_reason')}"
            report.skipped.append(c.config_hash())
            bar.done(f"{c.config_hash()} NOT resubmitted, it stopped earlier ({_describe(c)}): "
                     f"{stopped.get('stopped_reason')}")
        else:
            todo.append(c)
    bar.line(f"{len(unique)} run(s): {report.loaded} already finished, {len(todo)} to run ({executor.name})")
    start = time.perf_counter()
    try:
        for config, outcome in executor.execute(todo, runs_dir=root, workdir=None if workdir is None else Path(workdir),
                                                progress=progress and executor.name == "inprocess", threads=threads):
            key = config.config_hash()
            if isinstance(outcome, BaseException):
                message = f"{type(outcome).__name__}: {str(outcome).strip().splitlines()[-1] if str(outcome).strip() else ''}"
                report.failures[key] = message
                bar.done(f"{key} FAILED ({_describe(config)}): {message}")
            else:
                report.summaries[key] = outcome
                report.ran += 1
                bar.done(f"{key} {outcome.get('status')} ({_describe(config)}): {_result_line(outcome)}")
    finally:
        if _bar is None:
            bar.close()
    if todo:
        log.info("%d run(s) in %.1f s, %d failed", len(todo), time.perf_counter() - start,
                 sum(c.config_hash() in report.failures for c in todo))
    return report


def sweep(studies: Sequence[str], params: Mapping[str, Any], *, executor=None,
          runs_dir: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
          progress: bool = True, echo: Callable[[str], None] | None = None) -> SweepReport:
    """Train the grid of ``studies`` (``"02"``, ``"03"``, ``"04"``) under the notebook ``params``.

    Rounds: build every config that can be built (``study_configs``), run the unfinished ones, repeat
    until a round adds nothing (04's pruning runs appear once their dense runs are finished). Runs
    that stopped earlier are reported, not resubmitted. ``workdir`` (default: the notebooks folder) is
    where the runs execute: ``pipeline.notebook_params`` writes an ``imagefolder:`` dataset path relative
    to the notebooks folder, as the notebooks see it, so the runs find their data there. Every run trains
    with the profile's ``threads`` (``torch_threads``), whichever executor runs it.
    """
    workdir = Path(workdir or notebooks_dir()).resolve()
    total = SweepReport()
    bar = _Progress(progress, echo)
    try:
        while True:
            configs = [c for s in studies for c in grids.study_configs(s, params, finished=total.summaries)]
            new = [c for c in dict.fromkeys(configs) if c.config_hash() not in total.summaries
                   and c.config_hash() not in total.failures]
            if not new:
                break
            total.merge(run_configs(new, executor=executor, runs_dir=runs_dir, workdir=workdir, progress=progress,
                                    retry_stopped=False, echo=echo, threads=int(params.get("threads") or 0), _bar=bar))
    finally:
        bar.close()
        if hasattr(executor, "close"):
            executor.close()
    return total
