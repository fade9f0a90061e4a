"""micronet_lib.report.results_sets: one folder per (profile, data), a clobber guard, staging + swap (issue #11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from micronet_lib.report import results_sets as sets, set_manifest

REPO = Path(__file__).resolve().parents[1]
HEAD = {"commit": "a" * 40, "dirty": False}


def _same(a, b):  # a stand-in for "same code" that needs no git history
    return a == b


def _committed(tmp_path, profile="cpu", data="imagefolder:../shared/data/cifar10-jpeg", **manifest):
    target = sets.results_set(profile, data, publish=True, base=tmp_path)
    target.folder.mkdir(parents=True)
    (target.folder / "tables").mkdir()
    (target.folder / "tables" / "t.csv").write_text("x\n1\n")
    if manifest is not None:
        (target.folder / sets.MANIFEST).write_text(json.dumps({"profile": profile, "data": data, **manifest}))
    return target


def test_set_names_and_folders(tmp_path):
    assert sets.set_name("cpu", "imagefolder:../shared/data/cifar10-jpeg/") == "cpu-cifar10-jpeg"
    assert sets.set_name("smoke", "synthetic") == "smoke-synthetic"
    scratch = sets.results_set("smoke", "synthetic", base=tmp_path)
    committed = sets.results_set("cpu", "cifar100", publish=True, base=tmp_path)
    assert scratch.folder == tmp_path / "scratch" / "smoke-synthetic" and not scratch.committed
    assert committed.folder == tmp_path / "cpu-cifar100" and committed.staging == tmp_path / ".staging" / "cpu-cifar100"


def test_scratch_and_staging_are_git_ignored_and_committed_sets_are_not():
    def ignored(path):
        return subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path]).returncode == 0

    assert ignored("results/scratch/smoke-synthetic/tables/00_plan.csv")
    assert ignored("results/.staging/cpu-cifar10-jpeg/html/00_setup.html")
    assert ignored("results/cpu-cifar10-jpeg/runs/abc/best.pt")  # checkpoints never
    assert not ignored("results/cpu-cifar10-jpeg/tables/00_plan.csv")
    assert not ignored("results/cpu-cifar10-jpeg/runs/abc/derived/score_kaist.json")  # run records are committed


def test_guard_allows_a_new_set_the_same_code_and_scratch(tmp_path):
    new = sets.results_set("cpu", "cifar100", publish=True, base=tmp_path)
    sets.check_publish(new, profile="cpu", data="cifar100", rebuild=False, identity=HEAD, same=_same)
    target = _committed(tmp_path, commit=HEAD["commit"])
    sets.check_publish(target, profile="cpu", data="imagefolder:x/cifar10-jpeg", rebuild=False, identity=HEAD, same=_same)
    scratch = sets.results_set("cpu", "cifar100", base=tmp_path)
    sets.check_publish(scratch, profile="cpu", data="cifar100", rebuild=False, identity={"commit": None}, same=_same)


def test_a_set_keeps_one_budget_a_rerender_under_another_is_refused(tmp_path):
    """A re-render (or adding to a committed set) under a profile whose budget changed since the set was built
    would leave reports of two different studies under one manifest: refused in one line, naming the change."""
    from micronet_lib.pipeline import check_params

    params = check_params({}, profile="cpu")
    target = _committed(tmp_path, commit=HEAD["commit"], budget=set_manifest.manifest_budget(params), seeds=params["seeds"])
    manifest = sets.read_manifest(target.folder)
    set_manifest.check_same_budget(target, manifest, params)  # the same budget: allowed
    for change, shown in (({"epochs": 5}, "epochs 16 → 5"), ({"seeds": [0, 1]}, "seeds [0, 1, 2, 3, 4, 5, 6, 7, 8] → [0, 1]")):
        with pytest.raises(sets.SetConflictError, match="built with another budget") as info:
            set_manifest.check_same_budget(target, manifest, {**params, **change})
        assert shown in str(info.value) and "--rebuild" in str(info.value) and "\n" not in str(info.value)
    set_manifest.check_same_budget(target, None, params)  # a new set has no budget yet


@pytest.mark.parametrize("manifest, profile, match", [
    (dict(commit="b" * 40), "cpu", r"commit bbbbbbbbbbbb, whose code differs from this checkout's aaaaaaaaaaaa"),
    (dict(commit="a" * 40, profile="smoke"), "cpu", r"profile 'smoke', not 'cpu'"),
    (None, "cpu", r"has no manifest.json"),
])
def test_guard_refuses_another_commit_or_profile_unless_rebuilt(tmp_path, manifest, profile, match):
    if manifest is None:
        target = _committed(tmp_path, manifest=None)
        (target.folder / sets.MANIFEST).unlink()
    else:
        target = _committed(tmp_path, **manifest)
    data = "imagefolder:../shared/data/cifar10-jpeg"
    with pytest.raises(sets.SetConflictError, match=match) as info:
        sets.check_publish(target, profile=profile, data=data, rebuild=False, identity=HEAD, same=_same)
    assert "--rebuild" in str(info.value) and "\n" not in str(info.value)  # one line, says the way out
    sets.check_publish(target, profile=profile, data=data, rebuild=True, identity=HEAD, same=_same)


def test_guard_refuses_a_dirty_tree_or_no_checkout(tmp_path):
    target = sets.results_set("cpu", "cifar100", publish=True, base=tmp_path)
    with pytest.raises(sets.SetConflictError, match="uncommitted changes outside results/"):
        sets.check_publish(target, profile="cpu", data="cifar100", rebuild=True, identity={**HEAD, "dirty": True})
    with pytest.raises(sets.SetConflictError, match="not run from a git checkout"):
        sets.check_publish(target, profile="cpu", data="cifar100", rebuild=True, identity={"commit": None, "dirty": None})


def test_same_code_uses_git_history():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert sets.same_code(head, head)
    assert not sets.same_code(head, "0" * 40)  # unknown commit: not the same code
    assert not sets.same_code(None, head)


def test_cli_refuses_to_clobber_a_committed_set_in_one_line(tmp_path, monkeypatch, capsys):
    from micronet_lib.cli import main

    _committed(tmp_path, profile="smoke", data="synthetic", commit="b" * 40)
    monkeypatch.setattr(sets, "code_identity", lambda: HEAD)
    rc = main(["reproduce", "--profile", "smoke", "--publish", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: refusing to add to the committed set") and err.count("\n") == 1


def test_staging_swap_replaces_the_set_whole_and_copies_it_when_adding(tmp_path):
    target = _committed(tmp_path, commit=HEAD["commit"])
    stage = sets.prepare_staging(target, HEAD, rebuild=False)
    assert (stage / "tables" / "t.csv").read_text() == "x\n1\n"  # adding to a set starts from a copy of it
    (stage / "tables" / "t.csv").write_text("x\n2\n")
    assert (target.folder / "tables" / "t.csv").read_text() == "x\n1\n"  # the set is untouched while building
    sets.swap_in(target)
    assert (target.folder / "tables" / "t.csv").read_text() == "x\n2\n"
    assert not target.staging.exists() and not target.trash.exists() and not target.staging_identity.exists()
    assert not sets.prepare_staging(target, HEAD, rebuild=True).joinpath("tables").exists()  # rebuild: from nothing


def test_interrupted_swap_is_undone_and_stale_staging_cleaned(tmp_path):
    target = _committed(tmp_path, commit=HEAD["commit"])
    stage = sets.prepare_staging(target, HEAD, rebuild=False)
    # killed between the two renames: the old set is aside, the new one not yet in place
    os.replace(target.folder, target.trash)
    (stage / "runs" / "r1").mkdir(parents=True)
    (stage / "runs" / "r1" / "metrics.jsonl").write_text("{}\n")
    (stage / "runs" / "r1" / ".last.pt.x.tmp").write_bytes(b"half")  # a half-written file
    (stage / "html" ).mkdir()
    (stage / "html" / "02.html").write_text("from the killed build")
    stage = sets.prepare_staging(target, HEAD, rebuild=False)
    assert (target.folder / "tables" / "t.csv").read_text() == "x\n1\n"  # the old set is back
    assert (stage / "runs" / "r1" / "metrics.jsonl").is_file()  # training runs of the same identity resume
    assert not (stage / "runs" / "r1" / ".last.pt.x.tmp").exists() and not (stage / "html" / "02.html").exists()
    other = sets.prepare_staging(target, {**HEAD, "commit": "c" * 40}, rebuild=False)
    assert not (other / "runs" / "r1").exists()  # another identity: nothing of the old build kept


def _notebook(folder: Path, name: str, body: str) -> None:
    import nbformat
    import yaml

    smoke = yaml.safe_load((REPO / "notebooks" / "params" / "smoke.yaml").read_text())
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in smoke.items()))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(textwrap.dedent(body))]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_kill_9_during_reproduce_leaves_the_old_set_intact(tmp_path):
    """kill -9 of ``reproduce`` while it builds a set: the old set stays byte-identical with no hidden
    half-written files; the next start cleans the stale staging folder and builds normally."""
    import shutil

    from micronet_lib import pipeline

    write = ("import os, pathlib\nout = pathlib.Path(os.environ['MICRONET_RESULTS']) / 'tables'\n"
             "out.mkdir(parents=True, exist_ok=True)\n(out / 'a.csv').write_text('{}')\n")
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(REPO / "notebooks" / "params", old / "params")
    shutil.copytree(REPO / "notebooks" / "params", new / "params")
    _notebook(old, "00_a", write.format("old"))
    _notebook(new, "00_a", write.format("new"))
    marker = tmp_path / "marker"
    _notebook(new, "01_slow", f"import pathlib, time\npathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)")
    base = tmp_path / "results"
    pipeline.reproduce("smoke", results_dir=base, notebooks=old)
    target = sets.results_set("smoke", "synthetic", base=base)
    before = _snapshot(target.folder)
    assert before["tables/a.csv"] == b"old" and "manifest.json" in before

    code = f"from micronet_lib import pipeline; pipeline.reproduce('smoke', results_dir={str(base)!r}, notebooks={str(new)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the build never reached the slow notebook"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # reproduce and its kernel, as kill -9 of the process group
        proc.wait()
    assert (target.staging / "tables" / "a.csv").read_text() == "new"  # the build had written the new table...
    assert _snapshot(target.folder) == before  # ...into staging only: the set is byte-identical
    assert not [p for p in target.folder.rglob(".*")]  # and holds no hidden half-written file

    pipeline.reproduce("smoke", results_dir=base, notebooks=old)  # the next start
    assert _snapshot(target.folder)["tables/a.csv"] == b"old"
    assert not target.staging.exists() and not list(target.folder.rglob(".*"))


def test_new_scratch_set_starts_from_the_committed_runs_of_the_same_code(tmp_path):
    committed = _committed(tmp_path, profile="cpu", data="cifar100", commit=HEAD["commit"])
    (committed.folder / "runs" / "r1").mkdir(parents=True)
    (committed.folder / "runs" / "r1" / "summary.json").write_text("{}")
    scratch = sets.results_set("cpu", "cifar100", base=tmp_path)
    seed = sets.committed_runs_for(scratch, HEAD, same=_same)
    assert seed == committed.folder / "runs"
    stage = sets.prepare_staging(scratch, HEAD, rebuild=False, seed_runs=seed)
    assert (stage / "runs" / "r1" / "summary.json").is_file()  # re-rendered from the records, not retrained
    assert not (stage / "tables").exists()  # only the runs: the scratch set's reports are its own
    assert sets.committed_runs_for(scratch, {"commit": "c" * 40}, same=_same) is None  # other code: train anew
    manifest = json.loads((committed.folder / sets.MANIFEST).read_text())
    (committed.folder / sets.MANIFEST).write_text(json.dumps({**manifest, "legacy": True}))
    assert sets.committed_runs_for(scratch, HEAD, same=_same) is None  # a legacy set is not one commit's
