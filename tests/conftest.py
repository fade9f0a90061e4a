"""Shared fixtures. Missing assets/data skip locally but FAIL when MICRONET_REQUIRE_ASSETS=1 (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two threads on the 2-core CI machine; MICRONET_TEST_THREADS=1 when the machine is shared (OpenMP
# barriers make 2 threads several times slower than 1 when another process holds a core).
torch.set_num_threads(int(os.environ.get("MICRONET_TEST_THREADS", min(2, os.cpu_count() or 1))))

REQUIRE = os.environ.get("MICRONET_REQUIRE_ASSETS", "") not in ("", "0", "false", "False")


def unavailable(reason: str):
    """Skip (developer machine) or fail (CI) because an external file is missing."""
    if REQUIRE:
        pytest.fail(f"{reason} (MICRONET_REQUIRE_ASSETS is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture
def asset():
    """``asset("micronet_v1_pr_60.t7") -> Path``, verified by sha256 through the asset layer."""
    from micronet_lib import assets

    def get(name: str) -> Path:
        try:
            return assets.fetch(name)
        except assets.AssetUnavailableError as exc:
            unavailable(str(exc))

    return get


@pytest.fixture
def cifar10_jpeg() -> Path:
    """The real CIFAR-10 JPEG tree (train/<class>, test/<class>) under MICRONET_IMAGEFOLDER_ROOT."""
    root = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
    if not root or not (Path(root) / "cifar10-jpeg" / "train").is_dir():
        unavailable("real images not found: set MICRONET_IMAGEFOLDER_ROOT to a folder holding cifar10-jpeg/")
    return Path(root) / "cifar10-jpeg"


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny ops gain nothing from a second thread, and on a shared
    machine OpenMP spin-waits make two threads many times slower. Restores the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def scoring_registry():
    """Undo the scorer registrations a test makes (the registries are process-wide); yields ``restore()``
    for a test that follows several suggestions one at a time."""
    from micronet_lib.scoring.handlers import module_handler
    from micronet_lib.scoring.records import ELEMENTWISE, FUNCTION_ALIASES, MODULE_COSTS

    module_handler(torch.nn.ReLU())  # the built-in activations register on first use: keep them
    saved = dict(MODULE_COSTS), dict(ELEMENTWISE), dict(FUNCTION_ALIASES)

    def restore():
        for live, old in zip((MODULE_COSTS, ELEMENTWISE, FUNCTION_ALIASES), saved):
            live.clear()
            live.update(old)

    yield restore
    restore()


def _suggestions(message: str) -> list[str]:
    """The calls a scorer message tells the user to make: backquoted ``micronet_lib.scoring.register_*(...)``
    and ``count(..., extra_params={...})``."""
    import re

    return [c for c in re.findall(r"`([^`]+)`", message)
            if c.startswith("micronet_lib.scoring.register_") or c.startswith("count(")]


def _follow(call: str, mults=0, adds=0) -> dict:
    """Do what ``call`` says, literally: a registration is executed (``...`` filled with the per-element
    counts); a ``count(..., extra_params=...)`` returns the keyword arguments to add to ``count``."""
    import ast
    import importlib
    import re

    if call.startswith("count("):
        return {"extra_params": ast.literal_eval(re.search(r"extra_params=(\{.*\})", call).group(1))}
    code = call.replace("mults=..., adds=...", f"mults={mults}, adds={adds}")
    namespace = {}
    for dotted in re.findall(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", code):
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):  # import the longest module prefix (a class's own module)
            try:
                importlib.import_module(".".join(parts[:i]))
                break
            except ImportError:
                continue
        namespace[parts[0]] = importlib.import_module(parts[0])
    exec(code, namespace)
    return {}


@pytest.fixture
def follow():
    """``follow(call, mults=, adds=)`` does a scorer suggestion literally; ``follow.calls(message)`` lists them."""
    _follow.calls = _suggestions
    return _follow


@pytest.fixture(scope="session")
def interrupt_training():
    """``interrupt_training(config, run_dir, after=N)``: ``fit`` killed (Ctrl-C) right after epoch N's metrics
    line is written, before that epoch's checkpoint; returns ``run_dir`` (an unfinished run that resumes)."""
    from micronet_lib.runstore import store
    from micronet_lib.train import fit, runs

    def run(config, run_dir: Path, *, after: int) -> Path:
        original, calls = runs.append_metrics, []

        def dying(run_dir_, record):
            original(run_dir_, record)
            calls.append(record)
            if len(calls) == after:
                raise KeyboardInterrupt

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(runs, "append_metrics", dying)
            with pytest.raises(store.TrainingInterrupted, match=f"interrupted after epoch {after - 1} of "):
                fit(config, run_dir, progress=False)
        return run_dir

    return run


@pytest.fixture(autouse=True)
def _no_results_env_leaks():
    """A notebook helper run in process (``announce``) points ``$MICRONET_RESULTS`` / ``$MICRONET_RUNS`` at its
    set for the rest of the process, as it must in a kernel; in the test process that would send later tests'
    runs into an earlier test's set. Each test starts and ends with the environment it was given."""
    names = ("MICRONET_RESULTS", "MICRONET_RUNS", "MICRONET_RESULTS_DEST", "MICRONET_RESULTS_KIND")
    saved = {n: os.environ.get(n) for n in names}
    yield
    for n, v in saved.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v
