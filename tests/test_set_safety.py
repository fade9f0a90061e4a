"""Results sets and caches as safe as run folders (issue #34): one test per silent row (1-10), and one
parametrised test of the rows that printed raw tracebacks (exactly one stderr line, exit 2).

Subprocess cases take their faults from ``tests/inject/sitecustomize.py`` (a full or read-only disk by
errno injection, a folder of tiny notebooks instead of ``notebooks/``): nothing needs root, nothing
outside the test's temp folders is touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from micronet_lib.report import results_sets as sets
from micronet_lib.cli import main
from micronet_lib.runstore import store
from micronet_lib.train import TrainConfig, fit, resume, run_or_load, runs

REPO = Path(__file__).resolve().parents[1]
INJECT = Path(__file__).resolve().parent / "inject"
# explicit execution modes: no calibration (minutes on a shared machine, and again at every thread count)
TINY = dict(cycles=1, epochs_per_cycle=2, train_per_class=8, val_per_class=None, test_per_class=4, select_on="test",
            bn_recalibrate_images=0, depth_mult=0.25, precision="fp32", memory_format="contiguous")
TINY_SETS = [x for k, v in TINY.items() for x in ("--set", f"{k}={'none' if v is None else v}")]


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_profile("smoke", **{**TINY, **changes})


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``micronet ARGS`` in a subprocess with the fault injection on its path."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INJECT), str(REPO)]), **(env or {})}
    for var in ("MICRONET_RESULTS", "MICRONET_RUNS", "MICRONET_RESULTS_KIND", "MICRONET_RESULTS_DEST"):
        full_env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "micronet_lib", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


_LOG_RECORD = re.compile(r"^(DEBUG|INFO|WARNING) [\w.]+: ")  # the CLI's logging (basicConfig), not an error


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line on stderr besides log records: ``error: ...``, exit 2, no traceback."""
    err = [line for line in proc.stderr.splitlines() if line.strip() and not _LOG_RECORD.match(line)]
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return err[0]


def notebooks(tmp_path: Path, cells: dict[str, str], yaml_text: str | None = None) -> Path:
    """A notebooks folder: the real profiles (or a broken smoke.yaml) and tiny notebooks of one cell each."""
    folder = tmp_path / "nbs"
    shutil.copytree(REPO / "notebooks" / "params", folder / "params")
    if yaml_text is not None:
        (folder / "params" / "smoke.yaml").write_text(yaml_text)
    for name, body in cells.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        params = nbformat.v4.new_code_cell("profile = 'smoke'")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(textwrap.dedent(body))]
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


# ---------------------------------------------------------------------- rows 1-2: one lock per results set
@pytest.fixture(scope="module")
def holder(tmp_path_factory):
    """A `micronet reproduce` of the scratch set smoke-synthetic (under ``base``) busy in a notebook."""
    tmp = tmp_path_factory.mktemp("holder")
    folder = notebooks(tmp, {"00_sleep": "import time\ntime.sleep(300)"})
    base = tmp / "results"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INJECT), str(REPO)]), "MICRONET_TEST_NOTEBOOKS": str(folder)}
    proc = subprocess.Popen([sys.executable, "-m", "micronet_lib", "reproduce", "--profile", "smoke", "--results",
                             str(base)], cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    executed = base / "scratch" / ".staging" / "smoke-synthetic" / "executed"
    deadline = time.monotonic() + 120
    while not executed.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert executed.is_dir(), "the holding reproduce did not start its notebook"
        yield tmp, base, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the holder and its kernel: their own process group
        proc.wait()


def test_row1_sweep_while_reproduce_builds_the_set_stops_naming_the_holder(holder):
    tmp, base, pid = holder
    line = one_error_line(cli("sweep", "--profile", "smoke", "--study", "02", "--results", str(base), "--no-progress",
                              cwd=tmp, timeout=90))
    assert "results set" in line and "smoke-synthetic" in line and f"pid {pid}" in line and "--wait" in line
    assert not (base / "scratch" / "smoke-synthetic").exists()  # nothing trained into the set being swapped


def test_search_augment_while_reproduce_builds_the_set_stops_naming_the_holder(holder):
    tmp, base, pid = holder
    line = one_error_line(cli("search-augment", "--profile", "smoke", "--results", str(base), "--no-progress",
                              cwd=tmp, timeout=90))
    assert "results set" in line and "smoke-synthetic" in line and f"pid {pid}" in line and "--wait" in line
    assert not (base / "scratch" / "smoke-synthetic").exists()  # no fold model trained into the set being swapped


def test_row2_second_reproduce_into_one_set_stops_naming_the_holder(holder):
    tmp, base, pid = holder
    line = one_error_line(cli("reproduce", "--profile", "smoke", "--only", "00", "--results", str(base), cwd=tmp,
                              timeout=120))
    assert "results set" in line and f"pid {pid}" in line and "--wait" in line
    executed = base / "scratch" / ".staging" / "smoke-synthetic" / "executed"
    assert [p.name for p in executed.iterdir() if p.name.startswith(".00_sleep.")]  # the holder's build is untouched


def test_set_lock_waits_with_wait_and_a_notebook_holds_its_scratch_set(tmp_path):
    target = sets.results_set("smoke", "synthetic", base=tmp_path)
    code = ("import sys, time; from micronet_lib.report import results_sets as s; from micronet_lib.report.set_writers import set_lock\n"
            f"t = s.results_set('smoke', 'synthetic', base={str(tmp_path)!r})\n"
            "with set_lock(t):\n    print('held', flush=True); time.sleep(float(sys.argv[1]))\n")
    from micronet_lib.report.set_writers import hold_for_process, set_lock

    proc = subprocess.Popen([sys.executable, "-c", code, "3"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(store.RunLockedError, match=f"pid {proc.pid} .*run this cell again"):
            hold_for_process(target)  # what a notebook's announce() does in a kernel
        start = time.monotonic()
        with set_lock(target, wait=True):  # --wait: returns once the holder is done
            assert time.monotonic() - start > 0.5
        assert proc.wait(timeout=30) == 0  # the holder finished its work, then this call got the set
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- row 3: --rebuild with --only
def test_row3_rebuild_with_only_is_refused_and_deletes_nothing(tmp_path):
    folder = notebooks(tmp_path, {"00_a": "pass", "01_b": "pass"})
    target = sets.results_set("smoke", "synthetic", base=tmp_path / "results")
    (target.folder / "html").mkdir(parents=True)
    (target.folder / "html" / "01_b.html").write_text("<p>kept</p>")
    (target.folder / "runs" / "abc").mkdir(parents=True)
    (target.folder / "runs" / "abc" / "summary.json").write_text("{}")
    before = sorted(p.relative_to(target.folder) for p in target.folder.rglob("*"))
    line = one_error_line(cli("reproduce", "--profile", "smoke", "--only", "00", "--rebuild", "--results",
                              str(tmp_path / "results"), cwd=tmp_path, env={"MICRONET_TEST_NOTEBOOKS": str(folder)}))
    assert "--rebuild with --only 00" in line and "drop --only" in line
    assert sorted(p.relative_to(target.folder) for p in target.folder.rglob("*")) == before


# ---------------------------------------------------------------------- row 4: same hash, same thread count
def test_row4_inprocess_sweep_trains_with_the_profiles_threads(tmp_path, monkeypatch):
    from micronet_lib.experiments import studies, sweeps
    from micronet_lib.pipeline import notebook_params

    params = notebook_params("smoke")
    assert params["threads"] == 1
    config = tiny(seed=11)
    monkeypatch.setattr(studies, "study_configs", lambda s, p, finished=None: [config])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = sweeps.sweep(["02"], params, runs_dir=tmp_path, progress=False)
        assert not report.failures and report.ran == 1
        assert torch.get_num_threads() == 2  # restored after the sweep
        [summary] = report.summaries.values()
        assert summary["runtime"]["threads"] == 1  # the profile's count, as the notebooks train
        assert json.loads((tmp_path / summary["run_id"] / "run.json").read_text())["runtime"]["threads"] == 1
        # re-rendered under another count: it says so
        with pytest.warns(RuntimeWarning, match=r"trained with 1 torch thread\(s\), this process has 2"):
            run_or_load(config, runs_dir=tmp_path)
    finally:
        torch.set_num_threads(before)
    # through Ray: the profile's threads, whatever --cpus-per-run reserves
    assert sweeps.worker_threads(1, 4, gpu=False) == 1 and sweeps.worker_threads(0, 4, gpu=False) == 4


# ---------------------------------------------------------------------- row 5: what a figure reads is verified
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    run_or_load(tiny(), runs_dir=root)
    return root


def test_row5_missing_metrics_are_rebuilt_from_last_pt_or_noted(finished, tmp_path, monkeypatch, caplog):
    from micronet_lib.report import results
    from micronet_lib.experiments import aggregate
    from micronet_lib.experiments.aggregate import curves_frame

    root = Path(shutil.copytree(finished, tmp_path / "runs"))
    run_dir = runs.run_dir_for(tiny(), root)
    original = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").unlink()
    with caplog.at_level(logging.WARNING):
        summary = run_or_load(tiny(), runs_dir=root)
    assert (run_dir / "metrics.jsonl").read_text() == original and "metrics.jsonl is missing" in caplog.text
    # no last.pt (a fresh clone of a committed set): the figure's caller says which curve is missing
    (run_dir / "metrics.jsonl").unlink()
    for name in ("last.pt", "last.prev.pt"):
        (run_dir / name).unlink()
    notes = []
    monkeypatch.setattr(aggregate, "note", notes.append)
    frame = curves_frame([run_or_load(tiny(), runs_dir=root)], ["x"])
    assert frame.empty and len(notes) == 1 and summary["run_id"] in notes[0] and "0 of 2 epochs" in notes[0]


# ---------------------------------------------------------------------- row 6: the decode cache is checksummed
def test_row6_a_flipped_decode_cache_is_decoded_again(tmp_path, monkeypatch, caplog):
    from PIL import Image

    from micronet_lib.data.imagefolder import load_imagefolder

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "img" / split / cls / f"{i}.png")
    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path / "cache"))
    first = load_imagefolder(str(tmp_path / "img"), workers=1)
    [cache] = (tmp_path / "cache" / "imagefolder").glob("*.pt")
    data = bytearray(cache.read_bytes())
    pixels = first.train.images.numpy().tobytes()
    at = bytes(data).find(pixels)
    assert at > 0  # the pixels are stored raw in the cache
    for k in range(100):
        data[at + k] ^= 0xFF
    cache.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        second = load_imagefolder(str(tmp_path / "img"), workers=1)
    assert torch.equal(second.train.images, first.train.images)
    assert "fails its checksum" in caplog.text and "decoding the images again" in caplog.text


# ---------------------------------------------------------------------- rows 7-8: resuming from a checkpoint
@pytest.fixture(scope="module")
def killed(tmp_path_factory, interrupt_training) -> Path:
    """Killed after epoch 2 was logged, before its checkpoint: an unfinished run whose last.pt is epoch 1."""
    return interrupt_training(tiny(), tmp_path_factory.mktemp("killed") / "run", after=2)


def test_row7_resuming_without_checkpoints_json_warns_and_is_recorded(killed, tmp_path, caplog):
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    (run_dir / "checkpoints.json").unlink()
    with caplog.at_level(logging.WARNING):
        summary = fit(tiny(), run_dir, progress=False)
    assert "last.pt has no checksum" in caplog.text and "UNVERIFIED" in caplog.text
    assert "unverified_checkpoint" in summary["runtime"]
    assert "unverified_checkpoint" in json.loads((run_dir / "run.json").read_text())["runtime"]


def test_row8_a_resumed_run_keeps_the_execution_mode_of_its_checkpoint(killed, tmp_path, caplog):
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    ckpt = store.load_checkpoint(run_dir / "last.pt")
    recorded = ckpt["execution"]
    mode = dict(recorded["train"]["mode"])
    other = dict(mode, precision="bf16" if mode["precision"] == "fp32" else "fp32")
    recorded["train"]["mode"] = other  # the mode this run was (say) calibrated to: not what this machine picks now
    store.save_checkpoint(run_dir / "last.pt", {k: v for k, v in ckpt.items() if k not in ("format", "verified")},
                          keep_previous=True)
    (run_dir / "execution.json").unlink()
    with caplog.at_level(logging.WARNING):
        summary = fit(tiny(), run_dir, progress=False)
    assert summary["execution"]["train"]["mode"] == other
    assert json.loads((run_dir / "execution.json").read_text())["train"]["mode"] == other
    assert "execution.json is missing" in caplog.text


# ---------------------------------------------------------------------- rows 9-10
def test_row9_untracked_notebooks_make_the_tree_dirty(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "notebooks" / "00_a.ipynb").write_text("{}")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(sets, "REPO", repo)
    sets.code_identity.cache_clear()
    try:
        assert sets.code_identity()["dirty"] is False
        sets.code_identity.cache_clear()
        (repo / "notebooks" / "06_new.ipynb").write_text("{}")
        assert sets.code_identity()["dirty"] is True
    finally:
        sets.code_identity.cache_clear()


def test_row10_empty_runs_dir_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--profile", "smoke", "--runs-dir", "", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --runs-dir is empty")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- the rows that printed tracebacks
def _result_file(tmp: Path) -> tuple[list[str], dict[str, str]]:
    (tmp / "results").write_text("not a folder")
    return ["reproduce", "--profile", "smoke", "--only", "00", "--results", str(tmp / "results")], {}


def _read_only(tmp: Path):
    return (["reproduce", "--profile", "smoke", "--only", "00", "--results", str(tmp / "ro")],
            {"MICRONET_TEST_FAIL": f"EROFS:{tmp / 'ro'}"})


def _full_staging(tmp: Path):
    return (["reproduce", "--profile", "smoke", "--only", "00", "--results", str(tmp / "res")],
            {"MICRONET_TEST_FAIL": "ENOSPC:smoke-synthetic.json."})


def _yaml(text: str):
    def case(tmp: Path):
        folder = notebooks(tmp, {"00_a": "pass"}, yaml_text=text)
        return ["reproduce", "--profile", "smoke", "--results", str(tmp / "res")], {"MICRONET_TEST_NOTEBOOKS": str(folder)}
    return case


def _manifest_shape(tmp: Path):
    committed = tmp / "res" / "smoke-synthetic"
    committed.mkdir(parents=True)
    (committed / "manifest.json").write_text("[1, 2]")
    return ["reproduce", "--profile", "smoke", "--only", "00", "--results", str(tmp / "res")], {}


def _in_notebook(body: str):
    def case(tmp: Path):
        folder = notebooks(tmp, {"00_fails": body.replace("TMP", str(tmp))})
        return ["reproduce", "--profile", "smoke", "--results", str(tmp / "res")], {"MICRONET_TEST_NOTEBOOKS": str(folder)}
    return case


_CORRUPT_DERIVED = """
from pathlib import Path
from micronet_lib.report.run_records import run_scores
run = Path('TMP/run'); (run / 'derived').mkdir(parents=True)
(run / 'derived' / 'score_kaist.json').write_text('{"key": {"conv')
run_scores([{"run_dir": str(run), "run_id": "run"}])
"""
_CORRUPT_METRICS = """
from pathlib import Path
from micronet_lib.runstore.store import read_metrics
run = Path('TMP/run'); run.mkdir()
(run / 'metrics.jsonl').write_text('{"global_epoch": 1}\\n{"glo')
read_metrics(run)
"""


def _train(tmp: Path, extra: dict[str, str]):
    return ["train", "--profile", "smoke", *TINY_SETS, "--runs-dir", str(tmp / "runs"), "--no-progress"], extra


def _lock_symlink(tmp: Path):
    config = TrainConfig.from_profile("smoke").with_overrides(TINY_SETS[1::2])
    run_dir = tmp / "runs" / config.config_hash()
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").symlink_to(run_dir / ".lock")  # a loop: ELOOP
    return _train(tmp, {})


TRACEBACK_ROWS = {
    "results-is-a-file": (_result_file, "is a file, not a folder"),
    "staging-read-only": (_read_only, "Read-only file system"),
    "staging-disk-full": (_full_staging, "No space left on device"),
    "params-malformed-yaml": (_yaml("profile: smoke\nseeds: [0, 1\n"), "smoke.yaml is not a valid parameters file (line"),
    "params-tagged-yaml": (_yaml("profile: !!python/object/apply:os.system ['touch PWNED']\n"),
                           "smoke.yaml is not a valid parameters file"),
    "manifest-wrong-shape": (_manifest_shape, "manifest.json holds a JSON list, not a manifest"),
    "derived-corrupt": (_in_notebook(_CORRUPT_DERIVED), "derived/score_kaist.json is corrupt"),
    "notebook-corrupt-metrics": (_in_notebook(_CORRUPT_METRICS), "metrics.jsonl line 2 is corrupt"),
    "execution-json-disk-full": (lambda tmp: _train(tmp, {"MICRONET_TEST_FAIL": "ENOSPC:execution.json."}),
                                 "no space left writing"),
    "lock-is-a-symlink": (_lock_symlink, ".lock: it is a symlink"),
}


@pytest.mark.parametrize("row", list(TRACEBACK_ROWS))
def test_traceback_rows_are_one_line_and_exit_2(row, tmp_path):
    make, expected = TRACEBACK_ROWS[row]
    args, env = make(tmp_path)
    line = one_error_line(cli(*args, cwd=tmp_path, env=env, timeout=240))
    assert expected in line, line
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------- the "unclear" rows
def test_unclear_rows_give_advice_that_works(killed, tmp_path, caplog):
    from micronet_lib import data
    from micronet_lib.models.checkpoints import read_state_dict

    # a class is named, not only numbered, and the option to lower is the one that set the count
    ds = data.load_dataset("synthetic", seed=0, synthetic_train_per_class=3, synthetic_test_per_class=2)
    with pytest.raises(ValueError, match=rf"class {ds.classes[0]!r} \(0\) has 3 examples, fewer than train_per_class"):
        data.subset(ds, train_per_class=5)
    # a folder given as a checkpoint is called a folder, not "does not exist"
    with pytest.raises(ValueError, match="is a folder, not a checkpoint file"):
        read_state_dict(killed)
    # a corrupt checkpoints.json: the fix offered (delete it) is the one that works, not --from-previous
    run_dir = Path(shutil.copytree(killed, tmp_path / "run"))
    (run_dir / "checkpoints.json").write_text("{broken")
    with pytest.raises(store.RunStoreError) as info:
        fit(tiny(), run_dir, progress=False)
    assert "delete it" in str(info.value) and "--from-previous" not in str(info.value)
    (run_dir / "checkpoints.json").unlink()  # following the advice: resumes, loudly unverified
    with caplog.at_level(logging.WARNING):
        assert fit(tiny(), run_dir, progress=False)["status"] == "finished"
    assert "UNVERIFIED" in caplog.text
    # only config.json lost: resumed from the config inside last.pt, not "not a run folder"
    run_dir = Path(shutil.copytree(killed, tmp_path / "run2"))
    (run_dir / "config.json").unlink()
    assert resume(run_dir, progress=False)["status"] == "finished"
    assert json.loads((run_dir / "config.json").read_text()) == tiny().to_dict(with_derived=True)
