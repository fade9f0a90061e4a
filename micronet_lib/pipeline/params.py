"""The notebook parameter schema and its checks (``PARAMS``, ``check_params``, ``user_namespace``).

Papermill only *warns* about parameters a notebook does not declare, so every notebook calls
``check_params`` right after its ``parameters`` cell; ``reproduce`` validates the profile the same
way before starting any notebook. The parameter schema (``PARAMS``) is shared by all notebooks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from micronet_lib.repo import notebooks_dir
from micronet_lib.experiments.configs import parse_setting
from micronet_lib.runstore.folder import tracked_by_git

PROFILES = ("smoke", "cpu", "gpu", "paper")


# --------------------------------------------------------------------------- parameter schema


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its name, Python type, whether ``None`` is allowed, and a value check.

    ``check(value)`` returns None when the value is fine, else the allowed values in words.
    """

    name: str
    kind: type
    doc: str
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None


def _choice(*allowed: str):
    return lambda v: None if v in allowed else f"one of {', '.join(map(repr, allowed))}"


def _at_least(lo: float):
    return lambda v: None if v >= lo else f">= {lo}"


def _items(item_type: type, check: Callable[[Any], str | None] | None = None, *, increasing=False, nonempty=True):
    def run(values):
        if nonempty and not values:
            return "a non-empty list"
        for v in values:
            if not _is(v, item_type):
                return f"a list of {item_type.__name__} (item {v!r} is {type(v).__name__})"
            if check and (msg := check(v)):
                return f"a list whose items are {msg} (item {v!r})"
        if increasing and any(b <= a for a, b in zip(values, values[1:])):
            return "a strictly increasing list"
        return None

    return run


def _data_spec(v: str) -> str | None:
    if v in ("synthetic", "cifar100", "cifar10") or (v.startswith("imagefolder:") and len(v) > len("imagefolder:")):
        return None
    return "'synthetic', 'cifar100', 'cifar10' or 'imagefolder:<path to a train/ + test/ tree>'"


def _device(v: str) -> str | None:
    if not (v in ("auto", "cpu", "mps", "cuda") or re.fullmatch(r"cuda:\d+", v)):
        return "auto, cpu, cuda, cuda:N or mps"
    import torch

    if v.startswith("cuda") and not torch.cuda.is_available():
        return "auto or cpu (CUDA is not available on this machine)"
    if v == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        return "auto or cpu (MPS is not available on this machine)"
    return None


def _threads(v: int) -> str | None:
    cpus = os.cpu_count() or 1
    return None if 0 <= v <= cpus else f"0 (torch's default) to {cpus} (the CPUs of this machine)"


def _rate(v: float) -> str | None:
    return None if 0 <= v < 100 else "percentages in [0, 100)"


def _setting(v: str) -> str | None:

    try:
        parse_setting(v)
    except ValueError as exc:
        return f"'<pipeline>[+cutmix|+mixup]' settings ({exc})"
    return None


# Shared by every notebook (papermill injects the whole profile into each one).
PARAMS: tuple[Param, ...] = (
    Param("profile", str, "which budget this run uses", check=_choice(*PROFILES)),
    Param("data", str, "dataset spec for training/evaluation (micronet_lib.data.load_dataset)", check=_data_spec),
    Param("device", str, "torch device; 'auto' picks cuda/mps/cpu", check=_device),
    Param("threads", int, "torch CPU threads; 0 keeps torch's default", check=_threads),
    Param("seeds", list, "seeds of the 02 ablation (mean ± std over them)", check=_items(int, _at_least(0))),
    Param("comparison_seeds", int, "how many of the first seeds the 03 and 04 training runs use", check=_at_least(1)),
    Param("model", str, "architecture trained in notebooks 02-04", check=_choice("micronet_v1", "micronet_v2")),
    Param("width_mult", float, "channel multiplier of trained models (1.0 = the paper's)", check=lambda v: None if v > 0 else "> 0"),
    Param("train_per_class", int, "training images per class (None = all)", nullable=True, check=_at_least(1)),
    Param("test_per_class", int, "test images per class (None = all)", nullable=True, check=_at_least(1)),
    Param("val_per_class", int, "validation images per class carved from train (0 = none)", check=_at_least(0)),
    Param("epochs", int, "epochs of each ablation run (None = the training profile's schedule)", nullable=True, check=_at_least(1)),
    Param("batch_size", int, "training batch size", check=_at_least(1)),
    Param("eval_images", int, "test images for evaluating released checkpoints (None = all)", nullable=True, check=_at_least(1)),
    Param("bn_recal_images", int, "training images for BN re-estimation (one-shot pruning; before evals of short runs)", check=_at_least(1)),
    Param("oneshot_rates", list, "one-shot global pruning rates (%) of a released checkpoint", check=_items(float, _rate, increasing=True)),
    Param("prune_rates", list, "iterative pruning schedule, % per cycle (docs/method.md §8.3)", check=_items(float, _rate, increasing=True)),
    Param("prune_epochs", int, "epochs per pruning cycle (None = the training profile's)", nullable=True, check=_at_least(1)),
    Param("augment_pipelines", list, "augmentation settings compared in 03: '<pipeline>[+cutmix|+mixup]'",
          check=_items(str, _setting)),
    Param("randaugment_n", list, "RandAugment N values of the 03 search grid (empty: no search)",
          check=_items(int, _at_least(1), nonempty=False)),
    Param("randaugment_m", list, "RandAugment M values of the 03 search grid (empty: no search)",
          check=_items(int, _at_least(0), nonempty=False)),
    Param("gallery_images", int, "images per pipeline in the 03 gallery", check=_at_least(1)),
)
_BY_NAME = {p.name: p for p in PARAMS}


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # bool is an int subclass; True is never a valid count
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def load_profile(profile: str, *, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parameters of ``notebooks/params/<profile>.yaml`` as a dict (not yet validated)."""
    import yaml

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    path = Path(folder or notebooks_dir()) / "params" / f"{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile file {path} not found (profiles: {', '.join(PROFILES)})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:

        restore = f", or restore the file with `git checkout -- {path}`" if tracked_by_git(path) else ""
        raise ValueError(f"{path} is not a valid parameters file ({_yaml_problem(exc)}); fix that line (plain "
                         f"`name: value` lines, no tags such as !!python){restore}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values, got {type(raw).__name__}")
    return raw


def _yaml_problem(exc: Exception) -> str:
    """One line out of a (multi-line) YAML error: what is wrong and where."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())[:160]
    return f"line {mark.line + 1}: {what}" if mark is not None else what


def check_params(
    params: Mapping[str, Any],
    *,
    schema: Iterable[Param] | None = None,
    profile: str | None = None,
    partial: bool = False,
) -> dict[str, Any]:
    """Validate notebook parameters before any work; return them as a plain dict.

    Unknown names, missing names, wrong types and out-of-range values each raise a ``ValueError``
    naming the parameter, the value and what is allowed. With ``profile=``, names missing from
    ``params`` are filled from that profile's YAML first. ``partial=True`` checks only the names given (none is
    missing): a notebook's ``parameters`` cell declares only the parameters that notebook reads, while a
    profile sets them all. Lists come back as lists of the declared item type (floats for rates).
    """
    by_name = {p.name: p for p in schema} if schema is not None else _BY_NAME
    params = dict(params)
    if profile is not None:
        params = {**load_profile(profile), **params}
    unknown = sorted(set(params) - set(by_name))
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; known parameters: {', '.join(by_name)}"
        )
    missing = [n for n in by_name if n not in params]
    if missing and not partial:
        raise ValueError(f"missing notebook parameter(s) {', '.join(missing)} (every profile sets all of them)")
    out: dict[str, Any] = {}
    for name, spec in by_name.items():
        if name not in params:
            continue
        value = params[name]
        if value is None and spec.nullable:
            out[name] = None
            continue
        if not _is(value, spec.kind):
            allowed = f"{spec.kind.__name__}{' or None' if spec.nullable else ''}"
            raise ValueError(f"parameter {name}={value!r} has type {type(value).__name__}; expected {allowed} ({spec.doc})")
        if spec.check is not None and (msg := spec.check(value)):
            raise ValueError(f"parameter {name}={value!r} is invalid; allowed: {msg} ({spec.doc})")
        if spec.kind is list:
            value = list(value)
        elif spec.kind is float:
            value = float(value)
        out[name] = value
    for name in ("oneshot_rates", "prune_rates"):
        if name in out:
            out[name] = [float(v) for v in out[name]]
    if "comparison_seeds" in out and "seeds" in out and out["comparison_seeds"] > len(out["seeds"]):
        raise ValueError(f"parameter comparison_seeds={out['comparison_seeds']!r} exceeds the {len(out['seeds'])} "
                         f"seed(s) of seeds={out['seeds']!r}; allowed: 1..{len(out['seeds'])}")
    return out


# IPython puts these into every kernel's namespace; they are not parameters.
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
# The first line of the cell papermill injects (its translator's comment); the notebooks' own
# parameters cells start with it too.
_PAPERMILL_HEADER = "# Parameters"


def _literal_assignments(source: str) -> list[str] | None:
    """The names a cell assigns if it is nothing but ``name = <literal>`` lines, else None.

    That is the shape of a papermill parameters cell and of the cell papermill injects.
    """
    import ast

    try:
        body = ast.parse(source).body
    except SyntaxError:
        return None
    names: list[str] = []
    for node in body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else None
        if not targets or node.value is None or not all(isinstance(t, ast.Name) for t in targets):
            return None
        try:
            ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        names += [t.id for t in targets]
    return names or None


def notebook_parameter_names(path: str | os.PathLike) -> list[str]:
    """The names a notebook file's ``parameters`` cell assigns: the parameters that notebook reads, and
    the only ones ``micronet reproduce`` passes it."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    names = _literal_assignments(cells[0].source) if len(cells) == 1 else None
    if names is None:
        raise ValueError(f"{path} needs exactly one cell tagged 'parameters' holding only `name = <literal>` lines")
    return names


def parameter_cell_names(history: Iterable[str], known: Iterable[str] | None = None) -> list[str] | None:
    """Names assigned by the parameter cells run last, read from a kernel's input history (``In``).

    A parameter cell holds only ``name = <literal>`` lines and either starts with papermill's
    ``# Parameters`` comment or assigns a known parameter. The cells taken are the last such cell and
    the parameter cells run right before it: papermill runs the notebook's ``parameters`` cell and then
    its injected cell, so both count; in JupyterLab the ones last edited and re-run count, and a typo
    fixed since then is forgotten. None when the history holds no parameter cell.
    """
    known = set(_BY_NAME if known is None else known)
    block: list[list[str]] = []
    for source in reversed(list(history)):
        names = _literal_assignments(source) if isinstance(source, str) else None
        is_param = names is not None and (source.lstrip().startswith(_PAPERMILL_HEADER) or bool(known & set(names)))
        if is_param:
            block.append(names)
        elif block:
            break  # the block of parameter cells run last has ended
    if not block:
        return None
    return list(dict.fromkeys(n for names in reversed(block) for n in names))


def user_namespace(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook parameters among a kernel's globals, for ``check_params``.

    Notebooks call ``check_params(user_namespace(globals()))`` right after the parameters cell. The
    names checked are every parameter of the schema the kernel holds, plus whatever else the parameter
    cells run last assigned (``parameter_cell_names`` of the kernel's ``In`` history): a misspelt
    ``-p`` name papermill injected is rejected instead of silently ignored, while the variables later
    cells define (``ax``, ``LEADERBOARD``...) are not parameters, so the check cell can be re-run at
    any point after editing a parameter in JupyterLab. The kernel's own history is used, not the
    notebook file: it exists in papermill, nbclient and JupyterLab alike and sees edits not yet saved.

    Outside IPython (no ``In`` history) every plain variable of ``namespace`` is returned.
    """
    import types

    history = namespace.get("In")
    names = parameter_cell_names(history) if isinstance(history, list) else None
    if names is not None:
        wanted = [n for n in _BY_NAME if n in namespace] + [n for n in names if n not in _BY_NAME]
        return {n: namespace.get(n) for n in wanted}
    return {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _IPYTHON_NAMES
        and not isinstance(v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type))
    }

