"""Results sets: one folder per (profile, data), produced by one commit, swapped in whole (issue #11).

Layout (``<base>`` is the repository's ``results/`` unless ``micronet reproduce --results`` says otherwise)::

    <base>/<profile>-<data>/            a committed set: tables/ figures/ html/ executed/ runs/ manifest.json
    <base>/scratch/<profile>-<data>/    a scratch set (git-ignored): smoke and interactive runs
    <base>/.staging/<set>/              a set being built (git-ignored), beside it <set>.json (its identity)

Who writes where:

- ``micronet reproduce`` (and ``make reproduce``) builds the *scratch* set of its profile and data.
- ``micronet reproduce --publish`` builds the *committed* set. It may add to an existing set only when that
  set was produced by the same code (its commit, or a commit that differs from it only under ``results/``)
  with the same profile and data; anything else is refused with a one-line error unless ``--rebuild`` is
  given, which rebuilds the set whole, from nothing. Publishing from a working tree with uncommitted
  changes outside ``results/`` is refused: a committed set names the one commit that made it.
- A notebook executed interactively (Jupyter, nbclient) with no ``$MICRONET_RESULTS`` writes its scratch
  set; ``announce(params)``, called from every notebook's check cell, says where outputs go.

A build writes into ``.staging/<set>/`` (seeded with a copy of the current set when adding to it) and,
once every notebook has succeeded, replaces the set with two renames. A killed build leaves the old set
untouched; the next start finishes or undoes an interrupted swap, resumes the training runs of a staging
folder with the same identity (commit, profile, data) and deletes everything else there.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from micronet_lib.fileio import atomic_write_json
from micronet_lib.repo import REPO
from micronet_lib.runstore.folder import tracked_by_git

__all__ = [
    "SetConflictError",
    "ResultsSet",
    "data_slug",
    "set_name",
    "results_set",
    "code_identity",
    "same_code",
    "check_publish",
    "read_manifest",
    "prepare_staging",
    "committed_runs_for",
    "swap_in",
    "recover",
    "relative_to_repo",
    "SCRATCH",
    "STAGING",
    "MANIFEST",
]

SCRATCH = "scratch"
STAGING = ".staging"
MANIFEST = "manifest.json"
SUBFOLDERS = ("tables", "figures", "html", "executed", "runs")
BUILD_SOURCES = ("notebooks", "micronet_lib")  # an untracked file here changes what a build runs


class SetConflictError(ValueError):
    """Publishing would mix commits or profiles in one committed set (the CLI prints it as one line)."""


def data_slug(data: str) -> str:
    """The data part of a set name: ``synthetic``, ``cifar100``, or an image folder's own name."""
    if data.startswith("imagefolder:"):
        data = Path(data.split(":", 1)[1].rstrip("/")).name or "imagefolder"
    return re.sub(r"[^A-Za-z0-9_.]+", "-", data).strip("-.") or "data"


def set_name(profile: str, data: str) -> str:
    """``<profile>-<data>``, e.g. ``cpu-cifar10-jpeg`` for ``imagefolder:../shared/data/cifar10-jpeg``."""
    return f"{profile}-{data_slug(data)}"


@dataclass(frozen=True)
class ResultsSet:
    """Where one set lives: ``folder`` (final), ``staging`` (while built) and whether it is committed."""

    name: str
    folder: Path
    committed: bool

    @property
    def kind(self) -> str:
        return "committed set" if self.committed else "scratch set, git-ignored"

    @property
    def staging(self) -> Path:
        return self.folder.parent / STAGING / self.name

    @property
    def staging_identity(self) -> Path:
        return self.folder.parent / STAGING / f"{self.name}.json"

    @property
    def trash(self) -> Path:
        return self.folder.parent / STAGING / f"{self.name}.old"

    @property
    def lock_folder(self) -> Path:
        """Where the set's lock lives: beside the set, not in it (the set folder itself is swapped)."""
        return self.folder.parent / STAGING / f"{self.name}.lock"


def results_set(profile: str, data: str, *, publish: bool = False, base: str | os.PathLike | None = None) -> ResultsSet:
    """The committed (``publish=True``) or scratch set of ``profile`` on ``data`` under ``base``."""
    base = Path(base) if base is not None else REPO / "results"
    name = set_name(profile, data)
    folder = base / name if publish else base / SCRATCH / name
    return ResultsSet(name=name, folder=folder, committed=publish)


def relative_to_repo(path: Path) -> str:
    """``path`` relative to the repository when inside it (what reports print), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- code identity


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)


@functools.lru_cache(maxsize=1)
def code_identity() -> dict[str, Any]:
    """``{"commit": <full sha or None>, "dirty": <uncommitted changes outside results/>}``.

    Untracked files the build runs (``notebooks/``, ``micronet_lib/``; not git-ignored) count as changes:
    a set made with them names a commit that does not contain them."""
    try:
        head = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        untracked = _git("ls-files", "--others", "--exclude-standard", "--", *BUILD_SOURCES)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip() or untracked.stdout.strip())}


def same_code(commit_a: str | None, commit_b: str | None) -> bool:
    """True when both commits hold the same code: equal, or differing only under ``results/``."""
    if not commit_a or not commit_b:
        return False
    if commit_a == commit_b:
        return True
    try:
        diff = _git("diff", "--quiet", commit_a, commit_b, "--", ".", ":(exclude)results")
    except (OSError, subprocess.SubprocessError):
        return False
    return diff.returncode == 0


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        data, why = None, f"is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})"
    else:
        why = None if isinstance(data, dict) else f"holds a JSON {type(data).__name__}, not a manifest (a mapping)"
    if why is not None:
        raise SetConflictError(f"{path} {why}; {_restore_fix(path)}")
    return data


def _restore_fix(path: Path) -> str:
    """How to get a damaged file of a set back: from git where the set is committed, else by rebuilding it."""

    where = relative_to_repo(path)
    if tracked_by_git(path):
        return f"restore it with `git checkout -- {where}`, or rebuild the set with `micronet reproduce ... --rebuild`"
    return f"delete {path} and rebuild the set with `micronet reproduce ... --rebuild` (it is not under version control)"


def check_publish(
    target: ResultsSet,
    *,
    profile: str,
    data: str,
    rebuild: bool,
    identity: Mapping[str, Any] | None = None,
    same: Callable[[str | None, str | None], bool] = same_code,
) -> None:
    """Refuse (``SetConflictError``) to add to a committed set made by other code, profile or data.

    ``rebuild=True`` allows any existing set: it is then rebuilt whole. Scratch sets are never refused.
    """
    if not target.committed:
        return
    identity = dict(identity or code_identity())
    where = relative_to_repo(target.folder)
    if identity.get("commit") is None:
        raise SetConflictError(f"cannot publish {where}: the library does not run from a git checkout, so the set "
                               "could not name its commit; run from a clone, or drop --publish (scratch set)")
    if identity.get("dirty"):
        raise SetConflictError(f"cannot publish {where} from a working tree with uncommitted changes outside "
                               "results/ (untracked files under notebooks/ or micronet_lib/ count): a committed set is "
                               "produced by one commit. Commit or stash them first (`git status` lists them; "
                               "`git stash -u` includes untracked files), or drop --publish to write the scratch set")
    if rebuild or not target.folder.exists():
        return
    manifest = read_manifest(target.folder)
    if manifest is None:
        raise SetConflictError(f"{where} exists but has no {MANIFEST}: it was not built by `micronet reproduce "
                               "--publish`; rebuild it whole with --rebuild")
    problems = []
    if manifest.get("profile") != profile:
        problems.append(f"profile {manifest.get('profile')!r}, not {profile!r}")
    if data_slug(manifest.get("data", "")) != data_slug(data):
        problems.append(f"data {manifest.get('data')!r}, not {data!r}")
    if not same(manifest.get("commit"), identity["commit"]):
        problems.append(f"commit {str(manifest.get('commit'))[:12]}, whose code differs from this checkout's "
                        f"{identity['commit'][:12]}")
    if problems:
        raise SetConflictError(f"refusing to add to the committed set {where}: it was produced with "
                               + "; ".join(problems) + ". A set comes from one commit and profile: rebuild it "
                               "whole with --rebuild, or drop --publish to write the scratch set")


# --------------------------------------------------------------------------- staging and swap


def committed_runs_for(target: ResultsSet, identity: Mapping[str, Any],
                       same: Callable[[str | None, str | None], bool] = same_code) -> Path | None:
    """The ``runs/`` of the committed set a new scratch set of the same name can start from: one made by
    the same code (not a legacy set). A fresh clone then re-renders it in scratch from the committed run
    records instead of retraining, and the committed set stays untouched."""
    if target.committed or target.folder.exists():
        return None
    committed = target.folder.parent.parent / target.name
    manifest = read_manifest(committed) if committed.is_dir() else None
    if not manifest or manifest.get("legacy") or not same(manifest.get("commit"), identity.get("commit")):
        return None
    return committed / "runs"


def recover(target: ResultsSet) -> None:
    """Finish or undo a swap a kill interrupted: the old set comes back if the new one never arrived."""
    if target.trash.exists():
        if target.folder.exists():
            shutil.rmtree(target.trash)
        else:
            os.replace(target.trash, target.folder)


def _remove_temp_files(folder: Path) -> None:
    """Half-written files of a killed writer (``fileio.atomic_path`` and papermill temp names start with '.')."""
    for path in sorted(folder.rglob(".*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def prepare_staging(target: ResultsSet, identity: Mapping[str, Any], *, rebuild: bool,
                    seed_runs: Path | None = None) -> Path:
    """An empty staging folder for ``target`` (a copy of the current set unless ``rebuild``).

    Training runs left by a killed build of the same identity are kept (they resume); every other
    leftover of an earlier build is deleted. ``seed_runs`` (a committed set's ``runs/``) starts a new
    set's runs from those records, so it re-renders them instead of retraining.
    """
    recover(target)
    staging, identity = target.staging, {**identity, "set": target.name, "rebuild": rebuild}
    kept_runs = None
    if staging.exists():
        try:
            old = json.loads(target.staging_identity.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old == identity and (staging / "runs").is_dir():
            kept_runs = staging.parent / f"{target.name}.runs"
            shutil.rmtree(kept_runs, ignore_errors=True)
            os.replace(staging / "runs", kept_runs)
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    if not rebuild and target.folder.is_dir():
        shutil.copytree(target.folder, staging, symlinks=True)
    staging.mkdir(exist_ok=True)
    if seed_runs is not None and seed_runs.is_dir() and not (staging / "runs").exists():
        shutil.copytree(seed_runs, staging / "runs", symlinks=True)
    if kept_runs is not None:
        for run in kept_runs.iterdir():
            dest = staging / "runs" / run.name
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(exist_ok=True)
            os.replace(run, dest)
        shutil.rmtree(kept_runs)
    _remove_temp_files(staging)
    atomic_write_json(target.staging_identity, identity)
    return staging


def swap_in(target: ResultsSet) -> Path:
    """Replace the set by its staging folder: old set aside, new set in, old set deleted."""
    recover(target)
    target.folder.parent.mkdir(parents=True, exist_ok=True)
    if target.folder.exists():
        os.replace(target.folder, target.trash)
    os.replace(target.staging, target.folder)
    if target.trash.exists():
        shutil.rmtree(target.trash)
    target.staging_identity.unlink(missing_ok=True)
    return target.folder
