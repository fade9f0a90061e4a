"""A results set's ``manifest.json``: who made it, with what budget, on which machine (issue #11), and the
rule that a set keeps one budget (issue #28: its reports describe one study)."""

from __future__ import annotations

import json
import os
import platform
from typing import Any, Mapping

from micronet_lib import __version__
from micronet_lib.accel.cpuinfo import cpu_flags
from micronet_lib.report.results_sets import ResultsSet, SetConflictError, code_identity, relative_to_repo
from micronet_lib.train.profiles import profile_execution

__all__ = ["machine_info", "manifest_budget", "check_same_budget", "build_manifest"]


def machine_info(*, device: str, threads: int) -> dict[str, Any]:
    """CPU model and the flags that matter for speed, cores, torch threads and the device of a build."""

    info = cpu_flags()
    model, flags = info["model"], [f for f, on in info["flags"].items() if on]
    gpu = None
    if device.startswith("cuda"):
        import torch

        gpu = torch.cuda.get_device_name(0)
    return {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "threads": threads, "device": device, "gpu": gpu}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version


    out = {"python": platform.python_version(), "micronet_lib": __version__}
    for package in ("torch", "torchvision", "numpy", "pandas", "matplotlib", "papermill", "nbclient", "ipykernel"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    return out


def manifest_budget(params: Mapping[str, Any]) -> dict[str, Any]:
    """The budget a manifest records: every parameter but where the set goes and how it runs."""
    return {k: v for k, v in params.items() if k not in ("profile", "data", "device", "threads", "seeds")}


def check_same_budget(target: ResultsSet, manifest: Mapping[str, Any] | None, params: Mapping[str, Any]) -> None:
    """Refuse (``SetConflictError``) to add reports to ``target`` under another budget or other seeds than the
    set's manifest records: its notebooks would then describe different studies under one manifest."""
    if not manifest or manifest.get("legacy") or "budget" not in manifest:
        return
    now = json.loads(json.dumps({**manifest_budget(params), "seeds": list(params["seeds"])}))
    was = {**manifest["budget"], "seeds": manifest.get("seeds")}
    changed = [f"{k} {was.get(k)!r} → {now.get(k)!r}" for k in sorted(set(now) | set(was)) if was.get(k) != now.get(k)]
    if changed:
        raise SetConflictError(f"{relative_to_repo(target.folder)} was built with another budget than the profile's now ("
                               + "; ".join(changed[:4]) + ("; …" if len(changed) > 4 else "")
                               + "): rebuild the set whole with --rebuild"
                               + (", or drop --publish to render into a scratch set" if target.committed else ""))


def build_manifest(
    target: ResultsSet,
    *,
    params: Mapping[str, Any],
    device: str,
    notebooks: Mapping[str, float],
    previous: Mapping[str, Any] | None,
    identity: Mapping[str, Any] | None = None,
    runs_commit: str | None = None,
) -> dict[str, Any]:
    """The set's ``manifest.json``: who made it (commit), with what (profile, data, budget, seeds,
    versions, machine) and how long each notebook took. Entries of notebooks not rerun are kept.
    ``runs_commit``: the commit that trained the run records when it is not the one rendering the reports
    (``micronet reproduce --rerender``), stored as ``runs.commit``."""
    identity = dict(identity or code_identity())
    per_notebook = dict((previous or {}).get("notebooks", {})) if previous and not previous.get("legacy") else {}
    for name, seconds in notebooks.items():
        per_notebook[name] = {"wall_seconds": round(seconds, 1), "commit": identity["commit"]}
    budget = manifest_budget(params)

    execution = profile_execution(params["profile"], params["device"])  # what every run of the set ran in
    return {
        "set": target.name,
        "kind": "committed" if target.committed else "scratch",
        "commit": identity["commit"],
        "dirty": identity["dirty"],
        "profile": params["profile"],
        "data": params["data"],
        "seeds": list(params["seeds"]),
        "budget": budget,
        "versions": _versions(),
        "machine": machine_info(device=device, threads=params["threads"]),
        "execution": execution,
        "notebooks": dict(sorted(per_notebook.items())),
        "runs": {"commit": runs_commit or identity["commit"]},
        "legacy": False,
    }
