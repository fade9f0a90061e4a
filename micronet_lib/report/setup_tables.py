"""The tables of ``00_setup``: environment, data sets, assets, and what each notebook will run (issue #2, #8)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from micronet_lib.environ import environment
from micronet_lib import __version__, assets
from micronet_lib.data import CIFAR_FOLDERS, data_root
from micronet_lib.devices import resolve_device
from micronet_lib.experiments import configs as ex
from micronet_lib.repo import list_notebooks
from micronet_lib.report.results import _git_commit

__all__ = ["environment_table", "dataset_table", "asset_table", "notebook_plan", "deviations_table"]


def environment_table(params: Mapping[str, Any]) -> "pd.DataFrame":
    """Versions, device and threads the notebooks run with (one row per item)."""
    import platform

    import numpy
    import pandas as pd
    import torch
    import torchvision

    device = resolve_device(params["device"])
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    rows = [
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("numpy", numpy.__version__),
        ("pandas", pd.__version__),
        ("micronet_lib", __version__),
        ("git commit", _git_commit() or "unknown"),
        ("platform", f"{platform.system()} {platform.machine()}"),
        ("device (resolved from '" + params["device"] + "')", device),
        ("GPU", gpu),
        ("CPU cores", os.cpu_count()),
        ("torch threads", torch.get_num_threads()),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


def dataset_table(params: Mapping[str, Any]) -> "pd.DataFrame":
    """Which data sets this machine has; the profile's own choice is marked. Nothing is downloaded."""
    import pandas as pd

    rows = []
    for spec, (folder, marker) in CIFAR_FOLDERS.items():
        here = (data_root() / folder / marker).is_file()
        rows.append((spec, "official pickles" if here else "absent (downloads on first use when online)",
                     f"$MICRONET_DATA/{folder}" if os.environ.get("MICRONET_DATA") else f"~/.cache/micronet/data/{folder}"))
    extra = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
    trees = sorted(p.name for p in Path(extra).iterdir() if (p / "train").is_dir() and (p / "test").is_dir()) if extra and Path(extra).is_dir() else []
    for tree in trees:
        rows.append((f"imagefolder:{tree}", "image tree (train/ + test/)", "$MICRONET_IMAGEFOLDER_ROOT/" + tree))
    if not trees:
        rows.append(("imagefolder:<path>", "none found ($MICRONET_IMAGEFOLDER_ROOT unset or empty)", "-"))
    rows.append(("synthetic", "always available (generated)", "-"))
    df = pd.DataFrame(rows, columns=["spec", "status", "where"])
    df.insert(0, "used by this run", ["yes" if _same_data(r, params["data"]) else "" for r in df["spec"]])
    if not df["used by this run"].any():
        df.loc[len(df)] = ["yes", params["data"], "given by the profile / --data", "-"]
    return df


def _same_data(row_spec: str, spec: str) -> bool:
    if row_spec == spec:
        return True
    return spec.startswith("imagefolder:") and row_spec.startswith("imagefolder:") and Path(spec[12:]).name == row_spec[12:]


def asset_table() -> "pd.DataFrame":
    """Released checkpoints and the policy file: verified local copy, or where it would come from.

    Looks only at mirrors and the cache (``MICRONET_OFFLINE`` is set for the look-up), so this
    never downloads; a present file is sha256-verified.
    """
    import pandas as pd

    rows = []
    with environment({assets.ENV_OFFLINE: "1"}):
        for name in assets.list_assets():
            try:
                path = assets.fetch(name)
                where = "cache" if Path(path).parent == assets.cache_dir() else "mirror ($MICRONET_ASSETS)"
                status = "available (sha256 verified)"
            except assets.AssetUnavailableError:
                status, where = "missing locally (downloaded on first use when online)", "-"
            except assets.AssetChecksumError:
                status, where = "CORRUPT: sha256 mismatch", "-"
            rows.append((name, status, where, assets.asset_url(name)))
    return pd.DataFrame(rows, columns=["asset", "status", "source", "upstream URL"])


def _study_configs(params: Mapping[str, Any]) -> dict[str, list]:
    """The ``TrainConfig`` of every training run each notebook adds (a run another notebook already made is
    shared, not repeated), built by ``micronet_lib.experiments`` exactly as the notebooks build them."""
    seeds, comp = params["seeds"], params["seeds"][: params["comparison_seeds"]]
    seen: set[str] = set()

    def new(configs):
        out = [c for c in configs if c.config_hash() not in seen]
        seen.update(c.config_hash() for c in out)
        return list({c.config_hash(): c for c in out}.values())

    ablation = new(ex.ablation_config(params, cell, seed=s) for cell in ex.ablation_cells(params) for s in seeds)
    settings = list(dict.fromkeys([*params["augment_pipelines"], *ex.randaugment_grid(params)]))
    augment = new(ex.augment_config(params, name, seed=s) for name in settings for s in comp)
    dense = new(ex.dense_config(params, seed=s) for s in comp)
    pruning = [f(params, "dense.pt", seed=s) for s in comp for f in (ex.iterative_config, ex.oneshot_config)]
    return {"02_regularizers": ablation, "03_augmentation": augment, "04_pruning": dense + pruning}


def _study_runs(params: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """Training runs each notebook adds and their length, from the study configs themselves."""
    runs = _study_configs(params)
    one = ex.dense_config(params, seed=params["seeds"][0])
    rates = params["prune_rates"]
    it = ex.iterative_config(params, "dense.pt", seed=params["seeds"][0])
    return {
        "02_regularizers": (len(runs["02_regularizers"]), f"{one.cycles} x {one.epochs_per_cycle}"),
        "03_augmentation": (len(runs["03_augmentation"]), f"{one.cycles} x {one.epochs_per_cycle}"),
        "04_pruning": (len(runs["04_pruning"]), f"iterative {len(rates)} x {it.epochs_per_cycle}, "
                       f"one-shot 1 x {len(rates) * it.epochs_per_cycle}"),
    }


_DEVIATION = re.compile(r"^(?P<field>\w+)=(?P<value>.*?) \(authors: (?P<authors>.*?)\): (?P<reason>.*)$")


def _override_reason(field: str) -> str:
    if field in ("dataset", "data_root"):
        return "the data of this results set (the profile's or --data)"
    return "set by the study: the quantity its cells compare (see the report)"


def deviations_table(params: Mapping[str, Any]) -> "pd.DataFrame":
    """Every departure from the authors' recipe of the training runs these parameters make, read from the
    runs' own configs (``TrainConfig.deviations``, the list stored with each run): the value used, the
    authors' value, the reason in full, and how many of the runs (per notebook) carry it."""
    import pandas as pd

    studies = _study_configs(params)
    total = sum(len(c) for c in studies.values())
    rows: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for notebook, configs in studies.items():
        for cfg in configs:
            for text in cfg.deviations:
                m = _DEVIATION.match(text)
                if m is None:  # pragma: no cover - TrainConfig.deviations always has this shape
                    raise ValueError(f"unexpected deviation text {text!r}")
                if m["field"] in ("seed", "init_from"):
                    continue  # seeds are in the plan; init_from is the study's own checkpoint path
                key = (m["field"], m["value"], m["authors"], m["reason"])
                rows.setdefault(key, {}).setdefault(notebook, 0)
                rows[key][notebook] += 1
    out = []
    for (field, value, authors, reason), per in rows.items():
        n = sum(per.values())
        where = f"all {total}" if n == total else "; ".join(f"{nb[:2]}: {k} of {len(studies[nb])}" for nb, k in per.items())
        out.append(dict(setting=field, **{"value used": value, "authors' value": authors, "runs": where,
                                          "reason": _override_reason(field) if reason == "override" else reason}))
    if not out:
        return pd.DataFrame([dict(setting="none", reason="no training runs under these parameters")])
    return pd.DataFrame(out)


def notebook_plan(params: Mapping[str, Any]) -> "pd.DataFrame":
    """What each notebook runs under these parameters: training runs, epochs (cycles x epochs), data."""
    import pandas as pd

    seeds, data = len(params["seeds"]), params["data"]
    comp = params["comparison_seeds"]
    pipes = len(params["augment_pipelines"])
    grid = len(params["randaugment_n"]) * len(params["randaugment_m"])
    cifar100 = data == "cifar100"
    runs = _study_runs(params)
    rows = [
        ("00_setup", 0, "-", "this report"),
        ("01_architecture", 0, "-", "stage tables, per-block counts (both conventions), WRN-28-10 / MicroNet dense / "
         "5 released checkpoints vs the leaderboard; no data"),
        ("02_regularizers", *runs["02_regularizers"], "orthogonality + class similarity of the released checkpoints; "
         f"{{CE, LS, WLS}} x {{ortho off, on}} x {seeds} seed(s) on {data}"),
        ("03_augmentation", *runs["03_augmentation"], f"gallery of the pipelines, FastAA policy statistics; "
         f"{pipes} settings + RandAugment grid of {grid} x {comp} seed(s) on {data} (runs shared with 02 not counted)"),
        ("04_pruning", *runs["04_pruning"], f"released ver2 chain; one-shot {len(params['oneshot_rates'])} rates "
         f"(score{', accuracy' if cifar100 else ''}); iterative {params['prune_rates']} vs one-shot x {comp} seed(s) "
         f"on {data}, from the dense model of 02"),
        ("05_scoring", 0, "-", "final score table, both conventions; released accuracy "
         + (f"on {params['eval_images'] or 'all'} CIFAR-100 test images" if cifar100 else "not measured (needs CIFAR-100)")
         + "; this run's models scored; leaderboard figure"),
    ]
    present = {p.stem for p in list_notebooks()}
    df = pd.DataFrame(rows, columns=["notebook", "new training runs", "cycles x epochs per run", "what it computes"])
    df.insert(1, "present", ["yes" if n in present else "not yet" for n in df["notebook"]])
    return df.astype({"cycles x epochs per run": str})

