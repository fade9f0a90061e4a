"""The Ray executor (issue #15): one local Ray cluster for the whole file, tiny synthetic runs.

Needs the cluster extra (``pip install -c constraints.txt -e ".[dev,cluster]"``, what ``make test``
installs); without Ray every test here FAILS with that install line (it never skips).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from micronet_lib.experiments import sweeps as executors
from micronet_lib.experiments.sweeps import InProcess, RayExecutor, run_configs
from micronet_lib.train import TrainConfig, read_metrics, read_summary, run_dir_for

REPO = Path(__file__).resolve().parents[1]
# Fields that measure time, not what was computed: they differ between any two executions ("execution"
# holds the mode calibration's timings and the allocator state of the process).
TIMING = {"seconds", "run_dir", "eval_seconds", "images_per_s", "execution"}
DEADLINE = 240  # seconds a driver may take on a loaded 2-core machine before the test gives up


def tiny(seed: int, *, epochs: int = 2, train_per_class: int = 4, **changes) -> TrainConfig:
    """A run of a few seconds: the smoke profile (quarter width, half depth) on 40 synthetic images."""
    return TrainConfig.from_profile("smoke", seed=seed, train_per_class=train_per_class, val_per_class=2,
                                    test_per_class=4, cycles=1, epochs_per_cycle=epochs, batch_size=16,
                                    bn_recalibrate_images=32, device="cpu", precision="fp32",
                                    memory_format="contiguous", **changes)  # one mode in every process


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster (2 CPUs, its own temp dir and ports, no dashboard), shut down after the file."""
    try:
        import ray
    except ImportError:
        pytest.fail(executors.RAY_MISSING, pytrace=False)
    # A short path: Ray's unix sockets live under it (108-byte limit), pytest's tmp paths are long.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    saved_stats = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report leaves the machine (the drivers inherit it)
    env = {"OMP_NUM_THREADS": "1", **{k: v for k, v in os.environ.items() if k.startswith("MICRONET_")}}
    for attempt in (1, 2):  # on a machine under heavy load the raylet may miss Ray's 30 s start window once
        try:
            ray.init(num_cpus=2, _temp_dir=temp, include_dashboard=False, log_to_driver=False,
                     object_store_memory=100 * 2**20, runtime_env={"env_vars": env})
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    # Start this driver's two workers now (they import the training code once and are reused), so a
    # task of a test starts at once: the two-driver test needs its task to overlap the other driver's.
    def import_training() -> int:  # defined here: Ray ships it by value (workers cannot import this file)
        import micronet_lib.train.engine  # noqa: F401

        time.sleep(0.5)  # hold the CPU so that the other call lands on the second worker
        return os.getpid()

    try:
        warm = ray.remote(num_cpus=1)(import_training)
        ray.get([warm.remote() for _ in range(2)])
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved_stats is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
        else:
            os.environ["RAY_USAGE_STATS_ENABLED"] = saved_stats


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Runs trained in this process (the default executor), keyed by config hash, computed once."""
    root = tmp_path_factory.mktemp("inprocess")
    cache: dict[str, dict] = {}

    def get(config: TrainConfig) -> dict:
        key = config.config_hash()
        if key not in cache:
            report = run_configs([config], executor=InProcess(), runs_dir=root)
            summary = report.summaries[key]
            cache[key] = dict(summary=summary, metrics=read_metrics(summary["run_dir"]))
        return cache[key]

    return get


@pytest.fixture
def one_thread_torch():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks run on one thread: the same arithmetic, bit for bit
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- smoke grid
def test_ray_grid_equals_the_in_process_executor(cluster, reference, tmp_path, one_thread_torch):
    configs = [tiny(0), tiny(1), tiny(0, loss="ls"), tiny(0, ortho_coef=0.0)]
    report = run_configs(configs, executor=RayExecutor(cpus_per_run=1), runs_dir=tmp_path / "runs")
    assert report.failures == {} and report.ran == 4 and report.loaded == 0
    for c in configs:
        ray_summary = report.summaries[c.config_hash()]
        assert ray_summary["status"] == "finished" and Path(ray_summary["run_dir"]) == run_dir_for(c, tmp_path / "runs")
        expected = reference(c)
        assert without_timing(ray_summary) == without_timing(expected["summary"])
        assert [without_timing(r) for r in read_metrics(ray_summary["run_dir"])] == \
            [without_timing(r) for r in expected["metrics"]]
    # a second call reads every run back and submits nothing
    again = run_configs(configs, executor=RayExecutor(), runs_dir=tmp_path / "runs")
    assert (again.loaded, again.ran) == (4, 0)


def test_a_run_that_fails_on_its_own_is_reported_once_not_retried(cluster, tmp_path):
    bad = tiny(0, init_from=str(tmp_path / "missing.pt"))  # valid config; fails in the worker at setup
    lines: list[str] = []
    report = run_configs([bad, tiny(5, epochs=1)], executor=RayExecutor(max_retries=3), runs_dir=tmp_path / "runs",
                         echo=lines.append)
    assert list(report.failures) == [bad.config_hash()] and "missing.pt" in report.failures[bad.config_hash()]
    assert sum("FAILED" in line for line in lines) == 1 and report.ran == 1
    assert not (run_dir_for(bad, tmp_path / "runs") / "summary.json").exists()


# ---------------------------------------------------------------------- fault: a worker dies
def _train_workers() -> list[psutil.Process]:
    """Ray worker processes executing a training task (Ray titles them ``ray::<task>``)."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith("ray::") and ("_train_in_worker" in cmd or "train " in cmd):
            out.append(proc)
    return out


def _wait_for(predicate, what: str, timeout: float = DEADLINE, every: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(cluster, reference, tmp_path, one_thread_torch):
    config = tiny(7, epochs=6, train_per_class=12)
    runs = tmp_path / "runs"
    run_dir = run_dir_for(config, runs)
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(
        report=run_configs([config], executor=RayExecutor(max_retries=2), runs_dir=runs)))
    driver.start()
    # after the first epoch's checkpoint, kill the worker running the task (SIGKILL: no clean-up at all)
    _wait_for(lambda: (run_dir / "last.pt").exists() and len(read_metrics(run_dir)) >= 1, "the first checkpoint")
    first_line = (run_dir / "metrics.jsonl").read_text().splitlines()[0]
    workers = _wait_for(_train_workers, "the worker process")
    assert len(workers) == 1
    epoch_seconds = json.loads(first_line)["seconds"]
    time.sleep(min(0.3 * epoch_seconds, 0.5))  # into the second epoch, away from the checkpoint writes
    assert len(read_metrics(run_dir)) < 6, "the run finished before the worker could be killed"
    workers[0].send_signal(signal.SIGKILL)
    driver.join(DEADLINE)
    assert not driver.is_alive()

    report = result["report"]
    assert report.failures == {} and report.ran == 1  # Ray retried the task on a new worker
    summary = report.summaries[config.config_hash()]
    assert summary["status"] == "finished" and summary["epochs"] == 6
    # resumed, not restarted: the epoch written before the kill is the same line, timings included
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[0] == first_line
    expected = reference(config)
    assert without_timing(summary) == without_timing(expected["summary"])
    assert [without_timing(r) for r in read_metrics(run_dir)] == [without_timing(r) for r in expected["metrics"]]
    # nothing half-written: every text file parses and no temp file of an interrupted write is left
    assert read_summary(run_dir)["status"] == "finished"
    json.loads((run_dir / "config.json").read_text())
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".") and "tmp" in p.name] == []


# ---------------------------------------------------------------------- fault: the driver dies
DRIVER = """
import json, sys
from micronet_lib.experiments.sweeps import RayExecutor, run_configs
from micronet_lib.train import TrainConfig

address, runs, configs = sys.argv[1], sys.argv[2], [TrainConfig.from_dict(c) for c in json.loads(sys.argv[3])]
report = run_configs(configs, executor=RayExecutor(address), runs_dir=runs, echo=lambda line: print(line, flush=True))
print("RESULT " + json.dumps({"loaded": report.loaded, "ran": report.ran, "failures": report.failures,
                               "seconds": {k: s["seconds"] for k, s in report.summaries.items()}}), flush=True)
"""


def _driver(cluster: str, runs: Path, configs: list[TrainConfig], log: Path) -> subprocess.Popen:
    """Another Ray driver (a separate job) joining the test's cluster to run ``configs``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-c", DRIVER, cluster, str(runs), json.dumps([c.to_dict() for c in configs])],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _result(proc: subprocess.Popen, log: Path) -> dict:
    rc = proc.wait(DEADLINE)
    text = log.read_text()
    assert rc == 0, text
    return json.loads([line for line in text.splitlines() if line.startswith("RESULT ")][-1][len("RESULT "):])


def _finished(runs: Path, configs) -> list[TrainConfig]:
    return [c for c in configs if (s := read_summary(run_dir_for(c, runs))) and s.get("status") == "finished"]


def test_killed_driver_restarted_submits_only_unfinished_runs(cluster, tmp_path):
    epochs = 2  # two runs at a time on the 2 CPUs: when the first finishes, two have not started
    configs = [tiny(s, epochs=epochs) for s in (10, 11, 12, 13)]
    runs = tmp_path / "runs"
    first = _driver(cluster, runs, configs, tmp_path / "first.log")
    _wait_for(lambda: _finished(runs, configs), "a first finished run")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    # Ray ends the dead driver's tasks; wait for their workers to let go before the driver starts again
    _wait_for(lambda: not _train_workers(), "the killed driver's tasks to end", every=0.2)
    before = {c.config_hash(): ((p := run_dir_for(c, runs) / "metrics.jsonl").read_bytes(), p.stat().st_mtime_ns)
              for c in _finished(runs, configs)}
    assert len(before) < len(configs), "every run finished before the driver was killed"

    # the driver started again (here, in this process): only the unfinished runs are submitted
    lines: list[str] = []
    report = run_configs(configs, executor=RayExecutor(), runs_dir=runs, echo=lines.append)
    assert report.failures == {} and (report.loaded, report.ran) == (len(before), len(configs) - len(before))
    assert f"{len(before)} already finished, {len(configs) - len(before)} to run" in lines[0]
    assert len(_finished(runs, configs)) == len(configs)
    for key, (text, mtime) in before.items():  # finished runs were not retrained: not even touched
        path = runs / key / "metrics.jsonl"
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (text, mtime)
    for c in configs:
        assert [r["global_epoch"] for r in read_metrics(run_dir_for(c, runs))] == list(range(1, epochs + 1))


# ---------------------------------------------------------------------- two drivers, one grid
def test_two_drivers_on_one_grid_train_each_run_once(cluster, tmp_path):
    """Relies on the run store's lock in ``run_or_load`` (issue #18): the second caller waits, then loads.

    The grid is one run, so that the two drivers' tasks hold the cluster's two CPUs at the same time:
    the second driver starts while the first one's worker is training that very run.
    """
    epochs = 6
    config = tiny(20, epochs=epochs, train_per_class=12)
    runs, run_dir = tmp_path / "runs", run_dir_for(config, tmp_path / "runs")
    other = _driver(cluster, runs, [config], tmp_path / "other.log")
    _wait_for(lambda: (run_dir / "config.json").exists(), "the first driver's run to start")
    assert len(read_metrics(run_dir)) < epochs
    mine = run_configs([config], executor=RayExecutor(), runs_dir=runs)
    theirs = _result(other, tmp_path / "other.log")
    assert mine.failures == theirs["failures"] == {}
    on_disk = read_summary(run_dir)
    # trained once: both drivers got the one summary on disk (its own time measurement included),
    # and the history holds each epoch once
    assert mine.summaries[config.config_hash()]["seconds"] == theirs["seconds"][config.config_hash()] == on_disk["seconds"]
    assert [r["global_epoch"] for r in read_metrics(run_dir)] == list(range(1, epochs + 1))
