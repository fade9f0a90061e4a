"""The run store (issue #18): one test per fault of the issue's table, on tiny synthetic runs.

Each fault ends in a one-line error naming the file and the way out (exit 2 from the CLI), or is
repaired with a message; a second process is used only where a lock or a signal needs one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from micronet_lib import data
from micronet_lib.cli import main
from micronet_lib.train import TrainConfig, fit, read_metrics, resume, run_or_load, runs
from micronet_lib.runstore import folder as run_folder, store

REPO = Path(__file__).resolve().parents[1]
# 3 epochs of 80 images of a 1/4-width, 1/4-depth net: a few seconds, yet a real run with all files.
TINY = dict(cycles=1, epochs_per_cycle=3, train_per_class=8, val_per_class=None, test_per_class=4, select_on="test",
            bn_recalibrate_images=0, depth_mult=0.25)


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_profile("smoke", **{**TINY, **changes})


def strip(rows):
    """Metrics without the timing fields (they differ between any two runs)."""
    return [{k: v for k, v in r.items() if "seconds" not in k and k != "images_per_s"} for r in rows]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_the_module():
    """Every run of this file trains on one torch thread, whatever ran before (records say threads = 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    fit(tiny(), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def killed(tmp_path_factory, interrupt_training) -> Path:
    """Killed after epoch 3 was logged but before its checkpoint: last.pt = epoch 2, last.prev.pt = epoch 1."""
    return interrupt_training(tiny(), tmp_path_factory.mktemp("killed") / "run", after=3)


def copy(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def flip_byte(path: Path, offset: int = -200) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def _python(code: str, **env) -> subprocess.Popen:
    environ = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    return subprocess.Popen([sys.executable, "-c", code], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(predicate, proc: subprocess.Popen, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the child exited ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


_TRAIN_IN_CHILD = """
import torch; torch.set_num_threads(1)
from micronet_lib.train import TrainConfig, run_or_load
run_or_load(TrainConfig.from_profile("smoke", **{tiny!r}), runs_dir={root!r})
"""


# ---------------------------------------------------------------------- row 1: two trains on one run
def test_second_process_waits_for_the_holder_then_loads_its_run(tmp_path, caplog):
    config = tiny()
    run_dir = tmp_path / config.config_hash()
    child = _python(_TRAIN_IN_CHILD.format(tiny=TINY, root=str(tmp_path)))
    _wait_for(lambda: (run_dir / store.HOLDER).exists(), child, "the child took the lock")
    holder = json.loads((run_dir / store.HOLDER).read_text())
    with pytest.raises(store.RunLockedError, match=rf"in use by pid {child.pid} on host {socket.gethostname()} since "):
        with store.lock(run_dir, wait=False):
            pass
    assert holder["pid"] == child.pid
    summary = run_or_load(config, runs_dir=tmp_path)  # waits for the lock, then loads the finished run
    assert child.wait(timeout=120) == 0, child.stderr.read()[-2000:]
    assert "waiting for it to finish" in caplog.text and f"pid {child.pid}" in caplog.text
    assert summary["status"] == "finished" and summary["epochs"] == 3
    assert [r["global_epoch"] for r in read_metrics(run_dir)] == [1, 2, 3]  # every epoch once


def test_cli_second_train_stops_with_the_holder_named(tmp_path, capsys):
    config = tiny()
    run_dir = tmp_path / config.config_hash()
    with store.lock(run_dir):
        rc = main(["train", "--profile", "smoke", *[f"--set={k}={'none' if v is None else v}" for k, v in TINY.items()],
                   "--runs-dir", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()}" in error_line(capsys)


def test_holder_killed_leaves_a_stale_lock_that_is_broken_and_the_run_resumed(tmp_path, caplog):
    config = tiny()
    run_dir = tmp_path / config.config_hash()
    child = _python(_TRAIN_IN_CHILD.format(tiny=TINY, root=str(tmp_path)))
    _wait_for(lambda: (run_dir / "metrics.jsonl").exists() and (run_dir / store.LAST).exists(), child, "epoch 1")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert (run_dir / store.HOLDER).exists()  # the dead holder's record is left behind
    summary = run_or_load(config, runs_dir=tmp_path)
    assert f"broke the stale lock of run {run_dir}: pid {child.pid}" in caplog.text and "no longer running" in caplog.text
    assert summary["status"] == "finished" and [r["global_epoch"] for r in read_metrics(run_dir)] == [1, 2, 3]
    assert not (run_dir / store.HOLDER).exists()


# ---------------------------------------------------------------------- rows 2-3: corrupt last.pt
def test_flipped_byte_in_last_pt_is_refused_then_resumed_from_the_previous_checkpoint(killed, finished, tmp_path, capsys):
    run_dir = copy(killed, tmp_path)
    flip_byte(run_dir / store.LAST)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    line = error_line(capsys)
    assert f"{run_dir / store.LAST} fails its checksum" in line
    assert f"micronet train --resume {run_dir} --from-previous" in line and "--restart" in line
    summary = resume(run_dir, progress=False, start="previous")  # epoch 1's checkpoint → epochs 2, 3 replayed
    assert summary["status"] == "finished"
    assert strip(read_metrics(run_dir)) == strip(read_metrics(finished))  # bit-identical to the uninterrupted run


@pytest.mark.parametrize("content", [b"", b"garbage" * 100], ids=["empty", "garbage"])
@pytest.mark.parametrize("manifest", [True, False], ids=["checksummed", "no-manifest"])
def test_garbage_or_empty_last_pt_is_one_line_naming_the_way_out(killed, tmp_path, capsys, content, manifest):
    run_dir = copy(killed, tmp_path)
    (run_dir / store.LAST).write_bytes(content)
    if not manifest:
        (run_dir / "checkpoints.json").unlink()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    line = error_line(capsys)
    assert str(run_dir / store.LAST) in line and ("empty" in line if not content else True)
    assert "--from-previous" in line
    assert main(["train", "--resume", str(run_dir), "--restart", "--no-progress"]) == 0
    assert [r["global_epoch"] for r in read_metrics(run_dir)] == [1, 2, 3]


# ---------------------------------------------------------------------- row 4: best.pt truncated
def test_truncated_best_pt_of_a_finished_run_is_reported_and_rebuilt_on_rerun(finished, tmp_path, caplog):
    from micronet_lib.models import load_checkpoint

    run_dir = copy(finished, tmp_path)
    best = run_dir / store.BEST
    before = runs.load_checkpoint(best)["model"]
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"{best} fails its checksum .*truncated"):
        load_checkpoint(best)  # what a notebook or `micronet eval` does
    summary = fit(tiny(), run_dir, progress=False)
    assert summary["status"] == "finished" and "rebuilt it from the selected weights" in caplog.text
    after = runs.load_checkpoint(best)["model"]
    assert all(torch.equal(after[k], before[k]) for k in before)


# ---------------------------------------------------------------------- rows 5-6: text files
def test_deleted_metrics_are_rebuilt_from_the_checkpoint_on_resume(killed, finished, tmp_path, caplog):
    run_dir = copy(killed, tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    resume(run_dir, progress=False)
    assert "metrics.jsonl is missing; rebuilt its 2 epoch line(s) from last.pt" in caplog.text
    assert strip(read_metrics(run_dir)) == strip(read_metrics(finished))


@pytest.mark.parametrize("name", ["summary.json", "config.json", "metrics.jsonl"])
def test_corrupt_text_file_names_the_file_and_the_fix(finished, tmp_path, capsys, name):
    run_dir = copy(finished, tmp_path)
    (run_dir / name).write_text("{not json\n")
    read = {"summary.json": runs.read_summary, "metrics.jsonl": read_metrics, "config.json": store.read_record}[name]
    with pytest.raises(store.RunStoreError, match=rf"{run_dir / name}( line 1)? is corrupt.*rebuilt from last.pt"):
        read(run_dir)
    # With the checkpoint present, re-running repairs it from last.pt; without it, the error says what to do.
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert runs.read_summary(run_dir)["epochs"] == 3 and len(read_metrics(run_dir)) == 3
    json.loads((run_dir / "config.json").read_text())
    for pt in run_dir.glob("*.pt"):
        pt.unlink()
    (run_dir / name).write_text("{not json\n")
    # a folder git does not track (this temp folder, a scratch set): no `git checkout` advice that cannot work
    with pytest.raises(store.RunStoreError, match=rf"{run_dir / name}( line 1)? is corrupt.*train the run again \(it is "
                       "not under version control"):
        read(run_dir)


def test_corrupt_config_without_checkpoint_is_one_error_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("")
    assert main(["train", "--resume", str(tmp_path), "--no-progress"]) == 2
    assert f"{tmp_path / 'config.json'} is corrupt" in error_line(capsys)


# ---------------------------------------------------------------------- row 7: edited config
def test_edited_config_is_refused_with_the_fork_command_and_the_original_values(killed, tmp_path, capsys):
    run_dir = copy(killed, tmp_path)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["lr"] = 0.05
    (run_dir / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    line = error_line(capsys)
    assert f"{run_dir / 'config.json'} was edited after the run started" in line
    assert "micronet train --profile smoke --set" in line and "--set lr=0.05" in line
    assert "undo the edit (lr 0.05 → 0.1)" in line


# ---------------------------------------------------------------------- rows 8-9: disk full, temp files
def test_disk_full_is_one_line_and_earlier_files_stay_intact(finished, tmp_path, monkeypatch, capsys):
    # A tmpfs needs root (mount); a patched fsync raising ENOSPC while last.pt of epoch 2 is written
    # exercises the same path: the error surfaces from the writer of the temp file.
    run_dir = tmp_path / "run"
    real_fsync, written = os.fsync, []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".last.pt." in name:
            written.append(name)
            if len(written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(store.RunStoreError) as info:
        fit(tiny(), run_dir, progress=False)
    message = str(info.value)
    assert message.startswith(f"no space left writing {run_dir / store.LAST}; free ") and " MB on that disk" in message
    assert f"micronet train --resume {run_dir}" in message and "\n" not in message
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert runs.load_checkpoint(run_dir / store.LAST)["global_epoch"] == 1  # verified: the epoch-1 file is intact
    assert not list(run_dir.glob(".*.tmp"))
    resume(run_dir, progress=False)
    assert strip(read_metrics(run_dir)) == strip(read_metrics(finished))


def test_stale_temp_files_are_removed_on_the_next_start(killed, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=run_folder.__name__)
    run_dir = copy(killed, tmp_path)
    for name in (".last.pt.k2j3h4.tmp", ".metrics.jsonl.x8y9.tmp"):
        (run_dir / name).write_bytes(b"half a checkpoint")
    resume(run_dir, progress=False)
    assert not list(run_dir.glob(".*.tmp")) and "removed 2 stale temp file(s)" in caplog.text


# ---------------------------------------------------------------------- row 10: SIGINT
def test_sigint_exits_130_with_the_resume_command_and_no_traceback(tmp_path):
    run_dir = tmp_path / "runs"
    sets = [f"--set={k}={'none' if v is None else v}" for k, v in {**TINY, "epochs_per_cycle": 20}.items()]
    code = f"import sys; from micronet_lib.cli import main; sys.exit(main({['train', '--profile', 'smoke', *sets, '--runs-dir', str(run_dir), '--no-progress']!r}))"
    child = _python(code)
    folder = run_dir / tiny(epochs_per_cycle=20).config_hash()
    _wait_for(lambda: len(read_metrics(folder)) >= 2 if (folder / "metrics.jsonl").exists() else False, child, "epoch 2")
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    done = runs.load_checkpoint(folder / store.LAST)["global_epoch"]
    assert f"interrupted after epoch {done} of 20; resume with `micronet train --resume {folder}`" in err.splitlines()[-1]


# ---------------------------------------------------------------------- rows 11-14: input checked before work
def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (120, 30, 200)).save(path)


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_class_folder_is_an_error_naming_it(tmp_path, split):
    for s in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / s / cls).mkdir(parents=True)
            if not (s == split and cls == "dog"):
                _png(tmp_path / s / cls / "0.png")
    with pytest.raises(ValueError, match=rf"image folder class {tmp_path / split / 'dog'} holds no images"):
        data.load_dataset(f"imagefolder:{tmp_path}")


@pytest.mark.parametrize("key", ["lr", "momentum", "weight_decay", "mix_alpha", "epsilon"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_rejected_by_the_config(key, value):
    with pytest.raises(ValueError, match=rf"TrainConfig.{key}=.* must be a finite number"):
        TrainConfig.from_profile("smoke").with_overrides([f"{key}={value}"])


def test_notebook_params_threads_and_absent_device_are_rejected_before_work(monkeypatch):
    from micronet_lib.pipeline import check_params

    with pytest.raises(ValueError, match=rf"threads=100000 is invalid; allowed: 0 .* to {os.cpu_count()}"):
        check_params({"threads": 100000}, profile="smoke")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' is invalid; allowed: auto or cpu .CUDA is not available"):
        check_params({"device": "cuda"}, profile="smoke")


def test_synthetic_set_too_large_for_memory_is_refused_before_allocating(tmp_path, monkeypatch, capsys):
    import psutil

    monkeypatch.setattr(data.synthetic, "_synthetic_split", lambda *a: pytest.fail("allocated anyway"))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("vm", (), {"available": 24 * 10**9})())
    assert main(["train", "--profile", "smoke", "--set", "train_per_class=100000", "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress"]) == 2
    assert "needs about 60.0 GB of memory, but 24.0 GB are available; lower train_per_class" in error_line(capsys)
    assert not list((tmp_path / "runs").iterdir())  # the run folder made for the lock is removed again


# ---------------------------------------------------------------------- rows 15-18: CLI numbers, paths, devices
def test_eval_batch_size_zero_is_rejected_before_decoding(monkeypatch, capsys):
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("data decoded before the check"))
    assert main(["eval", "--model", "micronet_v2", "--data", "imagefolder:cifar10-jpeg", "--batch-size", "0"]) == 2
    assert "--batch-size 0 must be a positive number" in error_line(capsys)


@pytest.mark.parametrize("out, expected", [
    ("", "--out is empty"),
    ("/etc/passwd/x.pt", "/etc/passwd is a file, not a folder"),
    (".", "--out . is a folder"),
])
def test_prune_out_paths_are_one_line_errors(out, expected, capsys):
    assert main(["prune", "--from", "missing.pt", "--one-shot", "--rate", "30", "--out", out]) == 2
    assert expected in error_line(capsys)


def test_runs_dir_through_a_file_is_one_line_error(capsys):
    assert main(["train", "--profile", "smoke", "--runs-dir", "/etc/passwd", "--no-progress"]) == 2
    line = error_line(capsys)
    assert "cannot create run folder /etc/passwd/" in line and "a part of that path is a file" in line


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind", ["random", "empty", "malicious"])
def test_prune_and_sparsity_give_the_same_clear_error_as_score(tmp_path, capsys, kind):
    path = tmp_path / "bad.pt"
    path.write_bytes({"random": os.urandom(4096), "empty": b"", "malicious": pickle.dumps(_Evil())}[kind])
    lines = []
    for argv in (["score", "--checkpoint", str(path)], ["sparsity", str(path)],
                 ["prune", "--from", str(path), "--one-shot", "--rate", "30", "--out", str(tmp_path / "o.pt")]):
        assert main(argv) == 2, argv
        lines.append(error_line(capsys))
    assert len(set(lines)) == 1 and lines[0].startswith("error: bad.pt is not a readable PyTorch checkpoint"), lines
    assert not (tmp_path / "o.pt").exists()


def test_device_cuda_without_cuda_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--profile", "smoke", "--device", "cuda", "--dry-run"]) == 2
    assert "CUDA is not available; use --device cpu or auto" in error_line(capsys)


# ---------------------------------------------------------------------- row 19: thread count recorded
def test_thread_count_is_recorded_and_resuming_with_another_warns(killed, tmp_path, caplog):
    run_dir = copy(killed, tmp_path)
    # trained on the smoke profile's one thread (whatever this process had before: the test runs alone too)
    assert json.loads((run_dir / "run.json").read_text())["runtime"]["threads"] == 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = resume(run_dir, progress=False)
    finally:
        torch.set_num_threads(before)
    assert f"{run_dir} was trained with 1 torch threads, this process has 2" in caplog.text
    assert summary["runtime"]["threads"] == 1 and summary["runtime"]["resumed_with"] == [{"threads": 2}]


# ---------------------------------------------------------------------- what #11a needs: records without checkpoints
def test_a_finished_runs_record_reads_without_checkpoints(finished, tmp_path):
    run_dir = copy(finished, tmp_path)
    for pt in run_dir.glob("*.pt"):
        pt.unlink()
    record = store.read_record(run_dir)
    assert record["summary"]["status"] == "finished" and len(record["metrics"]) == 3
    assert record["config"]["lr"] == 0.1 and record["runtime"]["threads"] == 1
    with pytest.raises(store.CheckpointMissingError, match="checkpoints are not committed") as info:
        runs.load_checkpoint(run_dir / store.BEST)
    assert isinstance(info.value, FileNotFoundError)


def test_disk_full_on_a_real_tiny_tmpfs(tmp_path):
    """The same fault on a real file system: an 800 kB tmpfs in a private mount namespace (``unshare``)."""
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {tmp_path}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here (unshare -rm: {probe.stderr.strip()[:100]}); "
                    "the patched-writer test above covers the same path")
    sets = " ".join(f"--set={k}={'none' if v is None else v}" for k, v in TINY.items())
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=800k none {disk} && "
              f"{sys.executable} -m micronet_lib train --profile smoke {sets} --runs-dir {disk} --no-progress; "
              f"echo rc=$?; cp -a {disk}/{tiny().config_hash()} {kept}")  # the mount vanishes with the namespace
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert "rc=2" in out.stdout and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"error: no space left writing {disk}/"), errors
    assert " MB on that disk" in errors[0]
    assert runs.load_checkpoint(kept / store.LAST)["global_epoch"] == 1  # verified against its checksum
    assert len(read_metrics(kept)) >= 1 and not list(kept.glob(".*.tmp"))
