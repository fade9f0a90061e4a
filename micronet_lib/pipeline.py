"""The headless notebook pipeline behind ``micronet reproduce`` (issue #2, issue #8).

``reproduce(profile)`` runs ``notebooks/NN_*.ipynb`` in order with papermill (kernel ``python3``,
parameters from ``notebooks/params/<profile>.yaml``, working directory ``notebooks/``) into a results
set (``micronet_lib.results_sets``: the git-ignored ``results/scratch/<profile>-<data>/`` by default,
the committed ``results/<profile>-<data>/`` with ``publish=True``). Each executed notebook goes to the
set's ``executed/`` and an HTML report with the inputs hidden to its ``html/``; the set is built in a
staging folder and swapped in whole, so a failing notebook (the error names it and shows the failing
cell) or a kill leaves the previous set as it was.

Papermill only *warns* about parameters a notebook does not declare, so every notebook calls
``check_params`` right after its ``parameters`` cell; ``reproduce`` validates the profile the same
way before starting any notebook. The parameter schema (``PARAMS``) is shared by all notebooks.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from micronet_lib.fileio import atomic_write_json, atomic_write_text
from micronet_lib.results import RESULTS_ENV

__all__ = [
    "PROFILES",
    "Param",
    "PARAMS",
    "NotebookError",
    "NotebookRun",
    "notebooks_dir",
    "list_notebooks",
    "load_profile",
    "check_params",
    "user_namespace",
    "parameter_cell_names",
    "reproduce",
    "environment_table",
    "dataset_table",
    "asset_table",
    "notebook_plan",
]

log = logging.getLogger(__name__)

PROFILES = ("smoke", "cpu", "paper")
KERNEL = "python3"
_REPO = Path(__file__).resolve().parents[1]
_NOTEBOOK = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


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
    from micronet_lib.experiments.configs import parse_setting

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
    Param("randaugment_n", list, "RandAugment N values of the 03 search grid", check=_items(int, _at_least(1))),
    Param("randaugment_m", list, "RandAugment M values of the 03 search grid", check=_items(int, _at_least(0))),
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


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder."""
    return _REPO / "notebooks"


def load_profile(profile: str, *, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parameters of ``notebooks/params/<profile>.yaml`` as a dict (not yet validated)."""
    import yaml

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    path = Path(folder or notebooks_dir()) / "params" / f"{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile file {path} not found (profiles: {', '.join(PROFILES)})")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of parameter names to values, got {type(raw).__name__}")
    return raw


def check_params(
    params: Mapping[str, Any],
    *,
    schema: Iterable[Param] | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Validate notebook parameters before any work; return them as a plain dict.

    Unknown names, missing names, wrong types and out-of-range values each raise a ``ValueError``
    naming the parameter, the value and what is allowed. With ``profile=``, names missing from
    ``params`` are filled from that profile's YAML first. Lists come back as lists of the declared
    item type (floats for rates).
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
    if missing:
        raise ValueError(f"missing notebook parameter(s) {', '.join(missing)} (every profile sets all of them)")
    out: dict[str, Any] = {}
    for name, spec in by_name.items():
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


# --------------------------------------------------------------------------- running notebooks


class NotebookError(RuntimeError):
    """A notebook of the pipeline failed; the message names it and shows the failing cell."""


@dataclass(frozen=True)
class NotebookRun:
    name: str
    executed: Path
    html: Path
    seconds: float


def list_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """``NN_*.ipynb`` of ``folder`` (default the repository's ``notebooks/``), in order."""
    folder = Path(folder or notebooks_dir())
    return sorted(p for p in folder.glob("*.ipynb") if _NOTEBOOK.match(p.name))


def _select(notebooks: list[Path], only: str | Iterable[str] | None) -> list[Path]:
    if only is None:
        return notebooks
    wanted = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    known = {p.stem: p for p in notebooks}
    chosen = []
    for w in wanted:
        hits = [p for p in notebooks if p.stem == w or p.name[:2] == w.zfill(2)]
        if not hits:
            raise ValueError(f"--only {w!r} matches no notebook; available: {', '.join(known)}")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def _resolve_data(spec: str, folder: Path) -> str:
    """Check the data of a run exists before any notebook starts; return the spec the notebooks get.

    An ``imagefolder:`` path is taken relative to the current directory (then to
    ``$MICRONET_IMAGEFOLDER_ROOT``, as the data layer does) and rewritten relative to ``folder``, where
    the notebooks run -- not made absolute, so executed notebooks carry no machine-specific path.
    CIFAR pickles that are not on disk are fetched now (the data layer downloads them with md5
    checks), so an offline machine fails here, naming the folder, rather than in the middle of a run.
    """
    if spec.startswith("imagefolder:"):
        raw = Path(spec.split(":", 1)[1]).expanduser()
        root = raw if raw.is_absolute() else Path.cwd() / raw
        extra = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
        if not root.is_dir() and not raw.is_absolute() and extra and (Path(extra) / raw).is_dir():
            root = Path(extra) / raw
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"data {spec!r}: {root} has no {' or '.join(missing)}/ folder "
                "(expected <root>/train/<class>/* and <root>/test/<class>/*)"
            )
        return "imagefolder:" + os.path.relpath(root.resolve(), folder.resolve())
    if spec in _CIFAR_FOLDERS:
        from micronet_lib.data import data_root, load_dataset

        folder_name, marker = _CIFAR_FOLDERS[spec]
        if not (data_root() / folder_name / marker).is_file():
            try:
                load_dataset(spec, download=True)
            except (OSError, RuntimeError, ValueError) as exc:
                raise FileNotFoundError(
                    f"data {spec!r} is not available ({exc}). Put the official pickles under "
                    f"{data_root()} (or set MICRONET_DATA), or choose other data, e.g. "
                    "--data imagefolder:../shared/data/cifar10-jpeg (results are then labelled as that stand-in)"
                ) from exc
    return spec


# Official pickle folders (issue #2); the data layer owns the rest of the layout.
_CIFAR_FOLDERS = {"cifar100": ("cifar-100-python", "test"), "cifar10": ("cifar-10-batches-py", "test_batch")}


def _failure_message(name: str, exc: BaseException, saved: Path | None) -> str:
    from papermill.exceptions import PapermillExecutionError

    where = f"; the partly executed notebook is {saved}" if saved else ""
    if isinstance(exc, PapermillExecutionError):
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback[-3:]))
        return (
            f"notebook {name} failed in cell {exc.cell_index} (In [{exc.exec_count}]){where}\n"
            f"--- failing cell ---\n{exc.source}\n--- error ---\n{exc.ename}: {exc.evalue}\n{tb}"
        )
    return f"notebook {name} failed: {type(exc).__name__}: {exc}{where}"


_VOLATILE = ("start_time", "end_time", "duration")


def _stabilise(nb, name: str, shown: str) -> None:
    """Drop run times and machine paths from an executed notebook so reruns diff cleanly."""
    pm = nb.metadata.get("papermill", {})
    for key in _VOLATILE:
        pm.pop(key, None)
    pm["input_path"] = f"notebooks/{name}.ipynb"
    pm["output_path"] = f"{shown}/executed/{name}.ipynb"
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"  # papermill gives it a random id on every run
        cell.metadata.pop("execution", None)
        for key in _VOLATILE:
            cell.metadata.get("papermill", {}).pop(key, None)


def _scrub_paths(text: str) -> str:
    """Replace this machine's repository and home paths (e.g. in a warning's file name) by
    ``<repo>`` and ``~``: executed notebooks and reports are committed and must not carry them."""
    for path, label in ((_REPO, "<repo>"), (_REPO.parent, "<repo>/.."), (Path.home(), "~")):
        text = text.replace(str(path) + "/", label + "/")
    return text


def _render_html(nb) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    return body


def _quiet_kernel_manager():
    """nbclient's kernel manager without the two messages every successful run printed.

    - ``jupyter_client`` (>= 7) interrupts the kernel before every shutdown, even a graceful one after
      the last cell; ipykernel, idle in its message loop, catches that KeyboardInterrupt and logs
      ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.``. The shutdown request that follows
      stops an idle kernel by itself, and ``finish_shutdown`` still kills one that does not exit, so the
      interrupt is skipped while shutting down (it is kept for cell timeouts).
    - ipykernel 7 warns ``Kernel is running over TCP without encryption`` unless the manager provisions
      CurveZMQ keys; the ``python3`` kernelspec declares support, so encryption is switched on ("auto")
      wherever pyzmq has Curve, which silences the warning by removing its cause.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class QuietShutdownKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _encrypt_when_possible(self) -> str:
            return "auto" if zmq.has("curve") else "disabled"

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return QuietShutdownKernelManager


def _execute(path: Path, out: Path, *, params: Mapping[str, Any], cwd: Path, name: str, failed: Path) -> Any:
    """Run one notebook with papermill into ``out``; return it read back, or raise ``NotebookError``."""
    import nbformat
    import papermill

    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=out)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            papermill.execute_notebook(
                str(path), str(tmp), parameters=dict(params), kernel_name=KERNEL, cwd=str(cwd),
                progress_bar=False, log_output=False, kernel_manager_class=_quiet_kernel_manager(),
            )
        except Exception as exc:
            saved = None
            if tmp.is_file() and tmp.stat().st_size:
                os.replace(tmp, failed)  # kept for debugging; the error names it
                saved = failed
            raise NotebookError(_failure_message(name, exc, saved)) from exc
        return nbformat.read(tmp, as_version=4)
    finally:
        tmp.unlink(missing_ok=True)


def reproduce(
    profile: str,
    *,
    only: str | Iterable[str] | None = None,
    data: str | None = None,
    results_dir: str | os.PathLike | None = None,
    notebooks: str | os.PathLike | None = None,
    publish: bool = False,
    rebuild: bool = False,
) -> list[NotebookRun]:
    """Run the notebooks of ``profile`` headless into a results set; see the module docstring.

    ``data`` overrides the profile's dataset (an ``imagefolder:`` path is taken relative to the
    current directory). The set is ``<results_dir>/scratch/<profile>-<data>/`` (git-ignored), or with
    ``publish=True`` the committed ``<results_dir>/<profile>-<data>/`` (``results_dir`` defaults to the
    repository's ``results/``); ``rebuild=True`` builds it whole instead of adding to it. The set is
    built in a staging folder and swapped in only when every selected notebook succeeded
    (``micronet_lib.results_sets``); the kernels write tables, figures and training runs there through
    ``$MICRONET_RESULTS`` / ``$MICRONET_RUNS``.
    """
    import nbformat

    from micronet_lib import results_sets as sets
    from micronet_lib.cli import resolve_device
    from micronet_lib.results import DEST_ENV, KIND_ENV, RUNS_ENV

    folder = Path(notebooks or notebooks_dir())
    params = load_profile(profile, folder=folder)
    if data is not None:
        params["data"] = data
    params = check_params(params)
    if params["profile"] != profile:
        raise ValueError(f"{folder}/params/{profile}.yaml sets profile={params['profile']!r}; it must say {profile!r}")
    params["data"] = _resolve_data(params["data"], folder)
    selected = _select(list_notebooks(folder), only)
    if not selected:
        raise FileNotFoundError(f"no NN_*.ipynb notebooks in {folder}")
    target = sets.results_set(profile, params["data"], publish=publish, base=results_dir)
    identity = sets.code_identity()
    sets.check_publish(target, profile=profile, data=params["data"], rebuild=rebuild, identity=identity)
    previous = None if rebuild else sets.read_manifest(target.folder)

    seed = None if rebuild else sets.committed_runs_for(target, identity)
    stage = sets.prepare_staging(target, identity, rebuild=rebuild, seed_runs=seed).resolve()
    executed_dir, html_dir = stage / "executed", stage / "html"
    executed_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    shown = sets.relative_to_repo(target.folder)
    # The kernel inherits this environment: tables/figures/runs land in the staging copy of the set, the
    # first cell names the set's own folder, and progress bars (whose rates change every run) stay out
    # of the executed notebooks.
    env = {RESULTS_ENV: str(stage), RUNS_ENV: str(stage / "runs"), DEST_ENV: shown, KIND_ENV: target.kind,
           "TQDM_DISABLE": "1"}
    saved_env = {k: os.environ.get(k) for k in env}
    runs: list[NotebookRun] = []
    try:
        os.environ.update(env)
        for path in selected:
            name = path.stem
            log.info("running %s (profile %s, data %s) -> %s", name, profile, params["data"], shown)
            failed = executed_dir / f"{name}.failed.ipynb"
            start = time.perf_counter()
            nb = _execute(path, executed_dir, params=params, cwd=folder, name=name, failed=failed)
            seconds = time.perf_counter() - start
            _stabilise(nb, name, shown)
            nb = nbformat.reads(_scrub_paths(nbformat.writes(nb)), as_version=4)
            atomic_write_text(executed_dir / f"{name}.ipynb", nbformat.writes(nb) + "\n")
            atomic_write_text(html_dir / f"{name}.html", _render_html(nb))
            failed.unlink(missing_ok=True)  # a stale failure from an earlier run no longer applies
            log.info("%s done in %.1f s", name, seconds)
            runs.append(NotebookRun(name=name, executed=target.folder / "executed" / f"{name}.ipynb",
                                    html=target.folder / "html" / f"{name}.html", seconds=seconds))
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    manifest = sets.build_manifest(target, params=params, device=resolve_device(params["device"]),
                                   notebooks={r.name: r.seconds for r in runs}, previous=previous, identity=identity)
    atomic_write_json(stage / sets.MANIFEST, manifest)
    sets.swap_in(target)
    log.info("results set %s (%s) updated: %s", shown, target.kind, ", ".join(r.name for r in runs))
    return runs


# 00_setup's report tables live in their own module; re-exported here (public API of phase 1).
from micronet_lib.setup_report import asset_table, dataset_table, environment_table, notebook_plan  # noqa: E402
