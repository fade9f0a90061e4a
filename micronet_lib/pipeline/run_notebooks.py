"""Running the notebooks: papermill with a quiet kernel, executed copies and HTML reports in a results set."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from micronet_lib.environ import environment
from micronet_lib.fileio import atomic_write_json, atomic_write_text
from micronet_lib.report.results import RESULTS_ENV

from .datasets import resolve_data
from micronet_lib.repo import REPO, list_notebooks, notebooks_dir, select_notebooks
from .params import check_params, load_profile, notebook_parameter_names
from micronet_lib.report import index as results_index, results_sets as sets, set_manifest
from micronet_lib.report.set_writers import set_lock, storage_errors
from micronet_lib.devices import resolve_device
from micronet_lib.report.results import DEST_ENV, KIND_ENV
from micronet_lib.train.runs import NO_TRAINING_ENV, RUNS_ENV
from micronet_lib.train.profiles import profile_execution
from micronet_lib.experiments.sweeps import sweep
from micronet_lib.experiments.studies import STUDIES

log = logging.getLogger(__name__)

KERNEL = "python3"


class NotebookError(RuntimeError):
    """A notebook of the pipeline failed; the message names it and shows the failing cell."""


@dataclass(frozen=True)
class NotebookRun:
    name: str
    executed: Path
    html: Path
    seconds: float



def _failure_message(name: str, exc: BaseException, saved: Path | None) -> str:
    """One line: the notebook, the cell and its failing line, the error; the full traceback is in ``saved``
    (the partly executed notebook) and in the debug log (``micronet -v``)."""
    from papermill.exceptions import PapermillExecutionError

    where = (f"; the partly executed notebook, with the traceback, is {saved}" if saved
             else "; run with -v for the traceback")
    if isinstance(exc, PapermillExecutionError):
        tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(exc.traceback))
        log.debug("notebook %s, cell %s:\n%s\n%s", name, exc.cell_index, exc.source, tb)
        arrow = re.search(r"^-+> *\d+ (.+)$", tb, flags=re.MULTILINE)  # IPython marks the failing line of the cell
        lines = [line.strip() for line in exc.source.splitlines() if line.strip()]
        at = arrow.group(1).strip() if arrow else (lines[-1] if lines else "")
        evalue = (str(exc.evalue).strip().splitlines() or [""])[0]
        return (f"notebook {name} failed in cell {exc.cell_index} (In [{exc.exec_count}]) at `{at[:160]}`: "
                f"{exc.ename}: {evalue[:1000]}{where}")
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"notebook {name} failed: {type(exc).__name__}: {text[:1000]}{where}"


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
    for path, label in ((REPO, "<repo>"), (REPO.parent, "<repo>/.."), (Path.home(), "~")):
        text = text.replace(str(path) + "/", label + "/")
    return text


_NOTEBOOK_RELATIVE_LINK = re.compile(r'href="\.\./([^"#?]+)')


# Wide tables (asset URLs, the run plan, deviations) scroll inside their own output instead of widening
# the whole page; their cells stay on one line (results_format keeps numbers from wrapping).
_REPORT_CSS = "<style>.jp-OutputArea-output { overflow-x: auto; }</style>"


def _render_html(nb, html_dir: Path) -> str:
    """The report: nbconvert's HTML without code. Links the notebooks write relative to ``notebooks/``
    (``../docs/method.md``) are re-based on ``html_dir``, the folder the report is read from (the set's
    final ``html/``, not the staging copy it is written to first), when that lies inside the repository,
    so they resolve from the rendered report too (left as they are elsewhere: no machine path is written)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    body = body.replace("</head>", _REPORT_CSS + "</head>", 1)
    html_dir = Path(html_dir).resolve()
    if not html_dir.is_relative_to(REPO):
        return body
    to_repo = Path(os.path.relpath(REPO, html_dir)).as_posix()

    def rebase(match: re.Match) -> str:
        target = match.group(1)
        return f'href="{to_repo}/{target}' if (REPO / target).exists() else match.group(0)

    return _NOTEBOOK_RELATIVE_LINK.sub(rebase, body)


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

    # The profile has every parameter; a notebook gets those its parameters cell declares (the ones it reads).
    declared = set(notebook_parameter_names(path))
    own = {k: v for k, v in params.items() if k in declared}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=out)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            papermill.execute_notebook(
                str(path), str(tmp), parameters=own, kernel_name=KERNEL, cwd=str(cwd),
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


def pipeline_runs_dir(profile: str, data: str, *, results_dir: str | os.PathLike | None = None,
                      publish: bool = False) -> Path:
    """Where the notebooks of (``profile``, ``data``) keep their training runs: ``$MICRONET_RUNS``, else the
    ``runs/`` of that results set (``micronet sweep`` trains there, so ``reproduce`` reads them back)."""

    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    return sets.results_set(profile, data, publish=publish, base=results_dir).folder.resolve() / "runs"


def notebook_params(profile: str, *, data: str | None = None, folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parameters the notebooks of ``profile`` receive: the profile's YAML with ``data`` overriding
    its dataset, validated, the data checked and an ``imagefolder:`` path made relative to ``folder``
    (the notebooks' working directory). ``micronet sweep`` builds its grid from the same values."""
    folder = Path(folder or notebooks_dir())
    params = load_profile(profile, folder=folder)
    if data is not None:
        params["data"] = data
    params = check_params(params)
    if params["profile"] != profile:
        raise ValueError(f"{folder}/params/{profile}.yaml sets profile={params['profile']!r}; it must say {profile!r}")
    params["data"] = resolve_data(params["data"], folder)
    return params


def _write_index(target, *, final: bool, readme_only: bool = False) -> None:
    """The set's landing page (in staging before the swap), and the README's claims table once the set the
    README names is in place."""

    folder = target.folder if final else target.staging
    if not (folder / sets.MANIFEST).is_file():
        raise FileNotFoundError(f"{sets.relative_to_repo(target.folder)} has no {sets.MANIFEST}: build the set first "
                                "(micronet reproduce without --index-only)")
    if not readme_only:
        written = results_index.write_index(folder)
        log.info("landing page %s", sets.relative_to_repo(target.folder / written["html"].name))
    if final and target.committed and results_index.update_readme(REPO / "README.md", folder,
                                                                  results_index.claim_rows(folder)):
        log.info("README claims table regenerated from %s", sets.relative_to_repo(folder / "index.md"))


def reproduce(
    profile: str,
    *,
    only: str | Iterable[str] | None = None,
    data: str | None = None,
    results_dir: str | os.PathLike | None = None,
    notebooks: str | os.PathLike | None = None,
    publish: bool = False,
    rebuild: bool = False,
    executor=None,
    wait: bool = False,
    rerender: bool = False,
    index_only: bool = False,
) -> list[NotebookRun]:
    """Run the notebooks of ``profile`` headless into a results set; see the module docstring.

    ``data`` overrides the profile's dataset (an ``imagefolder:`` path is taken relative to the
    current directory). The set is ``<results_dir>/scratch/<profile>-<data>/`` (git-ignored), or with
    ``publish=True`` the committed ``<results_dir>/<profile>-<data>/`` (``results_dir`` defaults to the
    repository's ``results/``); ``rebuild=True`` builds it whole instead of adding to it. The set is
    built in a staging folder and swapped in only when every selected notebook succeeded
    (``micronet_lib.report.results_sets``); the kernels write tables, figures and training runs there through
    ``$MICRONET_RESULTS`` / ``$MICRONET_RUNS``. ``executor`` (``experiments.make_executor("ray")``, say):
    train the grid of the selected study notebooks (02–04) with it first, into the set's runs, so the
    notebooks only read finished runs back. ``rerender=True``: render the reports of an existing set again
    from its stored run records, even when the set was made by other code (the manifest then names the
    commit that trained the records apart from the one that rendered the reports); a run the records lack
    is an error, never trained. ``index_only=True``: only regenerate the set's landing page
    (``report.index``) and, for the set the README's claims table names, that table.

    The set is locked for the whole build (``set_writers.set_lock``): another ``reproduce``, ``sweep`` or
    notebook writing it makes this call wait (``wait=True``) or stop with an error naming the holder.
    ``rebuild`` with ``only`` is refused: a rebuild starts the set from nothing, so it would delete the
    reports and runs of every notebook not named.
    """

    if rebuild and only is not None:
        only_text = only if isinstance(only, str) else ",".join(only)
        raise ValueError(f"--rebuild with --only {only_text}: a rebuild starts the set from nothing, so the reports and runs "
                         "of every other notebook would be deleted; drop --only to rebuild the whole set, or drop --rebuild "
                         f"to rerun only {only_text} into the existing set")

    folder = Path(notebooks or notebooks_dir())
    params = notebook_params(profile, data=data, folder=folder)
    profile_execution(params["profile"], params["device"])  # a mode this machine cannot run: one line, before work
    selected = select_notebooks(list_notebooks(folder), only)
    if not selected:
        raise FileNotFoundError(f"no NN_*.ipynb notebooks in {folder}")
    target = sets.results_set(profile, params["data"], publish=publish, base=results_dir)
    if rerender and (rebuild or not (target.folder / "runs").is_dir()):
        raise ValueError(f"--rerender renders {sets.relative_to_repo(target.folder)} again from its run records: "
                         + ("it cannot go with --rebuild (which starts from nothing)" if rebuild else
                            "that set has no runs/ folder; drop --rerender to build it"))
    with set_lock(target, wait=wait), storage_errors(target):
        if index_only:
            _write_index(target, final=True)
            return []
        return _build(target, params, selected, profile=profile, folder=folder, rebuild=rebuild, executor=executor,
                      rerender=rerender)


def _build(target, params: Mapping[str, Any], selected: list[Path], *, profile: str, folder: Path, rebuild: bool,
           executor, rerender: bool) -> list[NotebookRun]:
    """``reproduce`` with the set locked: stage, train the grid (``executor``), run the notebooks, swap in."""
    import nbformat


    identity = sets.code_identity()
    # A re-render reuses the set's records whatever code trained them; the manifest keeps that commit apart.
    same = (lambda a, b: True) if rerender else sets.same_code
    sets.check_publish(target, profile=profile, data=params["data"], rebuild=rebuild, identity=identity, same=same)
    previous = None if rebuild else sets.read_manifest(target.folder)
    if rerender or target.committed:  # one set, one budget: its reports describe the same study
        set_manifest.check_same_budget(target, previous, params)

    seed = None if rebuild else sets.committed_runs_for(target, identity)
    stage = sets.prepare_staging(target, identity, rebuild=rebuild, seed_runs=seed).resolve()
    executed_dir, html_dir = stage / "executed", stage / "html"
    executed_dir.mkdir(parents=True, exist_ok=True)
    html_dir.mkdir(parents=True, exist_ok=True)
    shown = sets.relative_to_repo(target.folder)
    # The kernel inherits this environment: tables/figures/runs land in the staging copy of the set, the
    # first cell names the set's own folder, and progress bars (whose rates change every run) stay out
    # of the executed notebooks.
    # A run store named by the user ($MICRONET_RUNS, e.g. shared storage of a cluster) is used as it is;
    # its runs are then not copied into the set's runs/ (docs/cluster.md).
    env = {RESULTS_ENV: str(stage), RUNS_ENV: os.environ.get(RUNS_ENV) or str(stage / "runs"), DEST_ENV: shown,
           KIND_ENV: target.kind, "TQDM_DISABLE": "1", NO_TRAINING_ENV: "1" if rerender else ""}
    if executor is not None:

        studies = [p.name[:2] for p in selected if p.name[:2] in STUDIES]
        # the runs execute where the notebooks do: an imagefolder: params["data"] is relative to ``folder``
        report = sweep(studies, params, executor=executor, runs_dir=env[RUNS_ENV], workdir=folder)
        if report.failures:
            raise RuntimeError(f"{len(report.failures)} training run(s) of the grid failed, so the notebooks would "
                               "fail too: " + "; ".join(f"{k}: {v}" for k, v in report.failures.items()))
    runs: list[NotebookRun] = []
    with environment(env):
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
            atomic_write_text(html_dir / f"{name}.html", _render_html(nb, target.folder / "html"))
            failed.unlink(missing_ok=True)  # a stale failure from an earlier run no longer applies
            log.info("%s done in %.1f s", name, seconds)
            runs.append(NotebookRun(name=name, executed=target.folder / "executed" / f"{name}.ipynb",
                                    html=target.folder / "html" / f"{name}.html", seconds=seconds))
    runs_commit = ((previous or {}).get("runs") or {}).get("commit") or (previous or {}).get("commit") if rerender else None
    manifest = set_manifest.build_manifest(target, params=params, device=resolve_device(params["device"]),
                                   notebooks={r.name: r.seconds for r in runs}, previous=previous, identity=identity,
                                   runs_commit=runs_commit)
    atomic_write_json(stage / sets.MANIFEST, manifest)
    _write_index(target, final=False)
    sets.swap_in(target)
    _write_index(target, final=True, readme_only=True)
    log.info("results set %s (%s) updated: %s", shown, target.kind, ", ".join(r.name for r in runs))
    return runs

