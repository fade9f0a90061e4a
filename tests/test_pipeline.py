"""micronet_lib.pipeline: parameter schema, notebook hygiene, and the papermill pipeline."""

from __future__ import annotations

import ast
import json
import re
import shutil
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from micronet_lib import pipeline
from micronet_lib.pipeline import PARAMS, PROFILES, NotebookError, check_params, user_namespace
from micronet_lib.report.prose import PLAN_MARK

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = [p.name for p in PARAMS]


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_is_valid_and_complete(profile):
    raw = yaml.safe_load((NOTEBOOKS / "params" / f"{profile}.yaml").read_text())
    assert sorted(raw) == sorted(NAMES)  # a profile sets every parameter, nothing else
    params = check_params(raw)
    assert params["profile"] == profile


def test_profiles_use_the_data_the_spec_asks_for():
    smoke, cpu, gpu, paper = (check_params({}, profile=p) for p in PROFILES)
    assert smoke["data"] == "synthetic"
    # real CIFAR-100 unless --data says otherwise
    assert cpu["data"] == "cifar100" and gpu["data"] == "cifar100" and paper["data"] == "cifar100"
    assert paper["prune_rates"] == [15.0, 30.0, 45.0, 60.0]  # the (0, 60) schedule, docs/method.md §8.3
    assert paper["val_per_class"] == 0  # authors select on the test set (docs/method.md §5.7)


def test_unknown_parameter_is_rejected_by_name():
    params = check_params({}, profile="smoke")
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) epoch\b.*known parameters: profile"):
        check_params({**params, "epoch": 3})


def test_missing_parameter_is_rejected():
    params = check_params({}, profile="smoke")
    del params["seeds"]
    with pytest.raises(ValueError, match="missing notebook parameter.*seeds"):
        check_params(params)


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("profile", "fast", "one of 'smoke', 'cpu', 'gpu', 'paper'"),
        ("data", "cifar1000", "imagefolder:<path"),
        ("data", "imagefolder:", "imagefolder:<path"),
        ("device", "gpu", "auto, cpu, cuda"),
        ("seeds", [], "non-empty"),
        ("seeds", [True], "list of int"),
        ("seeds", 0, "expected list"),
        ("epochs", 0, ">= 1"),
        ("epochs", 2.5, "expected int or None"),
        ("train_per_class", "10", "expected int or None"),
        ("width_mult", 0, "> 0"),
        ("threads", None, "expected int"),
        ("oneshot_rates", [0, 100], r"\[0, 100\)"),
        ("prune_rates", [60, 30], "increasing"),
        ("model", "resnet", "micronet_v1"),
        ("augment_pipelines", ["baseline", 3], "list of str"),
        ("augment_pipelines", ["standard"], "unknown pipeline 'standard'"),
        ("augment_pipelines", ["baseline+blend"], r"'\+blend' is not a mixing"),
        ("comparison_seeds", 0, ">= 1"),
        ("comparison_seeds", 3, r"exceeds the 2 seed\(s\)"),
    ],
)
def test_bad_values_are_rejected_naming_the_parameter(name, value, match):
    params = {**check_params({}, profile="smoke"), name: value}
    with pytest.raises(ValueError, match=match) as info:
        check_params(params)
    assert f"{name}=" in str(info.value) or name in str(info.value)


def test_values_are_normalised():
    params = check_params({"width_mult": 1, "oneshot_rates": (0, 30)}, profile="smoke")
    assert params["width_mult"] == 1.0 and isinstance(params["width_mult"], float)
    assert params["oneshot_rates"] == [0.0, 30.0] and isinstance(params["oneshot_rates"], list)
    assert check_params({"epochs": None}, profile="smoke")["epochs"] is None  # nullable: profile schedule


def test_partial_checks_only_the_names_a_notebook_declares():
    assert check_params({"profile": "cpu", "seeds": [3]}, partial=True) == {"profile": "cpu", "seeds": [3]}
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) epoch\b"):
        check_params({"profile": "cpu", "epoch": 3}, partial=True)
    with pytest.raises(ValueError, match=r"parameter seeds=\[\] is invalid"):
        check_params({"seeds": []}, partial=True)


def test_user_namespace_keeps_only_notebook_variables():
    import math

    ns = {"In": [], "Out": {}, "get_ipython": print, "exit": None, "_": 1, "__name__": "__main__",
          "math": math, "f": lambda: 0, "profile": "smoke", "seeds": [0]}
    assert user_namespace(ns) == {"profile": "smoke", "seeds": [0]}


# ------------------------------------------------------------------ notebook hygiene


def _notebooks():
    found = pipeline.list_notebooks(NOTEBOOKS)
    assert found and found[0].name == "00_setup.ipynb"
    return found


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params_cell, check_cell = nb.cells[tagged[0]], nb.cells[tagged[0] + 1]
    assert "check_params(user_namespace(globals()), partial=True)" in check_cell.source  # validated before any work
    assert "announce(params)" in check_cell.source  # the first executed cell says where outputs go, which profile
    assigned = {t.id: ast.literal_eval(n.value) for n in ast.parse(params_cell.source).body
                for t in n.targets if isinstance(n, ast.Assign)}
    # declares only parameters of the shared schema (those this notebook reads; issue #30), at least where its
    # outputs go; and its defaults are valid
    assert set(assigned) <= set(NAMES) and {"profile", "data"} <= set(assigned)
    assert list(assigned) == pipeline.notebook_parameter_names(path)
    check_params(assigned, partial=True)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")  # title cell


def test_notebook_names_are_ordered_and_unique():
    numbers = [p.name[:2] for p in _notebooks()]
    assert numbers == sorted(set(numbers))


# ------------------------------------------------------------------ pipeline


def _mini_notebooks(tmp_path, cells: dict[str, str]) -> Path:
    """A notebooks/ folder with the real profiles and tiny notebooks that honour the parameter contract."""
    folder = tmp_path / "nbs"
    shutil.copytree(NOTEBOOKS / "params", folder / "params")
    smoke = yaml.safe_load((folder / "params" / "smoke.yaml").read_text())
    for name, body in cells.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        p = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in smoke.items()))
        p.metadata["tags"] = ["parameters"]
        check = nbformat.v4.new_code_cell(
            "from micronet_lib.pipeline import check_params, user_namespace\n"
            "params = check_params(user_namespace(globals()))"
        )
        nb.cells = [p, check, nbformat.v4.new_code_cell(textwrap.dedent(body))]
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


@pytest.mark.slow
def test_each_notebook_receives_only_the_parameters_it_declares(tmp_path):
    """The profile sets every parameter; papermill injects into a notebook only those of its parameters cell."""
    folder = _mini_notebooks(tmp_path, {"00_few": "from pathlib import Path\n"
                                        "Path('seen').write_text(','.join(sorted(params)))"})
    nb = nbformat.read(folder / "00_few.ipynb", as_version=4)
    nb.cells[0].source = "profile = 'smoke'\ndata = 'synthetic'\nseeds = [7]"
    nb.cells[1].source = nb.cells[1].source.replace("globals()))", "globals()), partial=True)")
    nbformat.write(nb, folder / "00_few.ipynb")
    pipeline.reproduce("smoke", results_dir=tmp_path / "results", notebooks=folder)
    assert (folder / "seen").read_text() == "data,profile,seeds"
    executed = nbformat.read(tmp_path / "results" / "scratch" / "smoke-synthetic" / "executed" / "00_few.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "seeds = [0, 1]" in injected.source and "epochs" not in injected.source  # the profile's value, nothing else


@pytest.mark.slow
def test_reproduce_stops_at_first_failure_and_shows_the_cell(tmp_path):
    folder = _mini_notebooks(tmp_path, {
        "00_ok": "from pathlib import Path\nPath('ran_00').write_text(data)",
        "01_boom": "x = 1\nraise ValueError('boom: ' + profile)",
        "02_after": "from pathlib import Path\nPath('ran_02').write_text('yes')",
    })
    out = tmp_path / "results"
    with pytest.raises(NotebookError) as info:
        pipeline.reproduce("smoke", results_dir=out, notebooks=folder)
    msg = str(info.value)
    assert "notebook 01_boom failed" in msg
    assert "\n" not in msg  # one line: the traceback is in the saved notebook (and the -v log)
    assert "raise ValueError('boom: ' + profile)" in msg  # the failing line of the cell
    assert "ValueError: boom: smoke" in msg  # and its error, with the injected profile
    assert (folder / "ran_00").read_text() == "synthetic"  # cwd = notebooks folder, params injected
    assert not (folder / "ran_02").exists()  # stopped at the first failure
    assert not (out / "scratch" / "smoke-synthetic").exists()  # a set is swapped in whole, or not at all
    stage = out / "scratch" / ".staging" / "smoke-synthetic"
    assert (stage / "executed" / "00_ok.ipynb").is_file() and (stage / "html" / "00_ok.html").is_file()
    assert (stage / "executed" / "01_boom.failed.ipynb").is_file() and "01_boom.failed.ipynb" in msg
    assert not (stage / "executed" / "01_boom.ipynb").exists()
    assert not [p for p in (stage / "executed").iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.slow
def test_injected_unknown_parameter_fails_inside_the_notebook(tmp_path):
    folder = _mini_notebooks(tmp_path, {"00_only": "pass"})
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter.*epoch"):
        papermill.execute_notebook(str(folder / "00_only.ipynb"), str(tmp_path / "o.ipynb"),
                                   parameters={"epoch": 3}, kernel_name="python3", progress_bar=False)


def test_bad_input_fails_before_any_notebook_runs(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(ValueError, match="profile must be one of"):
        pipeline.reproduce("fast", results_dir=out)
    with pytest.raises(ValueError, match="data='cifar1000'"):
        pipeline.reproduce("smoke", data="cifar1000", results_dir=out)
    with pytest.raises(FileNotFoundError, match="no train or test/ folder"):
        pipeline.reproduce("smoke", data=f"imagefolder:{tmp_path / 'nowhere'}", results_dir=out)
    with pytest.raises(ValueError, match="--only '77' matches no notebook; available: 00_setup"):
        pipeline.reproduce("smoke", only="77", results_dir=out)
    assert not out.exists()


def test_imagefolder_path_is_rewritten_relative_to_the_notebooks(tmp_path, monkeypatch):
    for split in ("train", "test"):
        (tmp_path / "data" / "tree" / split / "cat").mkdir(parents=True)
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo")
    spec = pipeline.resolve_data("imagefolder:../data/tree", tmp_path / "repo" / "notebooks")
    assert spec == "imagefolder:../../data/tree"  # relative, so executed notebooks carry no machine path


def test_cli_reports_bad_data_as_one_error_line(tmp_path, capsys):
    from micronet_lib.cli import main

    rc = main(["reproduce", "--profile", "smoke", "--data", "imagefolder:nowhere", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: data 'imagefolder:nowhere'")


@pytest.mark.slow
def test_setup_notebook_runs_headless_under_smoke(tmp_path, monkeypatch):
    monkeypatch.delenv("MICRONET_RUNS", raising=False)
    base = tmp_path / "results"
    runs = pipeline.reproduce("smoke", only="00", results_dir=base)
    out = base / "scratch" / "smoke-synthetic"  # smoke runs write the git-ignored scratch set
    assert [r.name for r in runs] == ["00_setup"]
    executed = nbformat.read(out / "executed" / "00_setup.ipynb", as_version=4)
    assert executed.metadata.papermill["parameters"]["profile"] == "smoke"
    assert "start_time" not in executed.metadata.papermill  # no timestamps: reruns diff cleanly
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    html = (out / "html" / "00_setup.html").read_text()
    assert "check_params(user_namespace" not in html  # inputs hidden
    assert "Environment of this run" in html and "torch" in html
    assert "Outputs of this notebook go to" in html and "profile <strong>smoke</strong>" in html
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["kind"] == "scratch" and "00_setup" in manifest["notebooks"]
    plan = (out / "tables" / "00_plan.csv").read_text()
    assert "02_regularizers" in plan
    side = json.loads((out / "tables" / "00_environment.meta.json").read_text())
    assert side["profile"] == "smoke" and side["data"].startswith("synthetic")
    assert str(Path.home()) + "/" not in (out / "executed" / "00_setup.ipynb").read_text()


# Every table and figure the smoke pipeline must leave (issue #8), by notebook.
EXPECTED_TABLES = {
    "00_setup": ["00_environment", "00_datasets", "00_data_summary", "00_assets", "00_plan", "00_deviations"],
    "01_architecture": ["01_stages_v1", "01_stages_v2", "01_blocks_v1", "01_blocks_v2", "01_block_counts_v1",
                        "01_block_counts_v2", "01_comparison", "01_by_op_type", "01_claims"],
    "02_regularizers": ["02_ortho_layers", "02_ortho_summary", "02_similarity_range", "02_similar_pairs",
                        "02_ablation_runs", "02_ablation", "02_claims"],
    "03_augmentation": ["03_policy_op_counts", "03_policy_op_stats", "03_augment_runs", "03_augment_comparison",
                        "03_randaugment_grid", "03_randaugment_best", "03_claims"],
    "04_pruning": ["04_chain_group_sparsity", "04_chain", "04_oneshot", "04_prune_runs", "04_prune_no_finetune",
                   "04_iterative_vs_oneshot", "04_claims"],
    "05_scoring": ["05_final_scores", "05_real_samples", "05_trained_scores", "05_claims"],
}
EXPECTED_FIGURES = {
    "01_architecture": ["01_per_block", "01_per_op_type"],
    "02_regularizers": ["02_ortho_spectra", "02_similarity_heatmap", "02_ablation_curves"],
    "03_augmentation": ["03_gallery", "03_policy_op_stats", "03_augment_comparison", "03_randaugment_grid"],
    "04_pruning": ["04_chain_group_sparsity", "04_oneshot", "04_iterative_vs_oneshot"],
    "05_scoring": ["05_leaderboard"],
}


def _fresh_clone(tmp_path) -> Path:
    """The working tree as a fresh clone would have it: tracked and untracked-but-not-ignored files, one
    commit, no scratch sets, runs or checkpoints."""
    import subprocess

    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    clone = tmp_path / "clone"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fresh clone"]):
        subprocess.run(git + cmd, check=True, capture_output=True)
    return clone


def _git_status(clone: Path) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_full_smoke_pipeline_on_a_fresh_clone_leaves_git_status_clean(tmp_path, asset):
    """On a fresh clone, ``micronet reproduce`` (what ``make reproduce`` runs: smoke) renders every report,
    table and figure into the git-ignored scratch set, quietly; executing a notebook with its default
    parameters (nbclient, as Jupyter would) writes there too; neither leaves ``git status`` unclean.
    Report 03 names only the settings that ran; a second build of notebook 02 publishes the same bytes.
    Re-rendering reads the training runs back instead of retraining (run_or_load), and works with the
    checkpoints deleted (committed sets have none): scores come from the runs' records, and what no
    record holds is a visible note, never a traceback."""
    import os
    import subprocess
    import sys

    for name in ("micronet_v1_pr_60.t7", "micronet_v2_pr_15.t7", "micronet_v2_pr_30.t7", "micronet_v2_pr_45.t7",
                 "micronet_v2_pr_60.t7", "cifar100_fast_aug.json"):
        asset(name)  # the released-checkpoint sections need them (skip locally / fail in CI without)
    clone = _fresh_clone(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("MICRONET_RESULTS", "MICRONET_RUNS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(clone)
    reproduce = [sys.executable, "-m", "micronet_lib", "reproduce"]
    done = subprocess.run(reproduce, cwd=clone, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    noise = [line for line in done.stderr.splitlines() if "[IPKernelApp]" in line or line.startswith("WARNING")]
    assert not noise, f"a successful reproduce printed: {noise}"  # e.g. 'KeyboardInterrupt caught in kernel'
    assert _git_status(clone) == ""
    out = clone / "results" / "scratch" / "smoke-synthetic"
    names = [p.stem for p in pipeline.list_notebooks(clone / "notebooks")]
    assert set(EXPECTED_TABLES) <= set(names)
    assert json.loads((out / "manifest.json").read_text())["notebooks"].keys() == set(names)
    checked_links = 0
    for name in names:
        html = (out / "html" / f"{name}.html").read_text()
        assert len(html) > 10_000 and "PosixPath" not in html  # results shown, not the paths they were saved to
        assert "&lt;Figure size" not in html, f"{name}: a figure rendered as text, not as an image"
        assert "results/scratch/smoke-synthetic/" in html  # the first cell says where outputs go
        doc_links = re.findall(r'href="([^"#:]+\.md)', html)
        checked_links += len(doc_links)
        for href in doc_links:  # links to the docs resolve from the report, not only from notebooks/
            assert (out / "html" / href).resolve().is_file(), f"{name}: {href} does not resolve from html/"
        nb = nbformat.read(out / "executed" / f"{name}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], f"{name} printed to stderr"
    assert checked_links > 0  # the notebooks do link docs/method.md and docs/scoring.md
    for table in (t for ts in EXPECTED_TABLES.values() for t in ts):
        for ext in ("csv", "md", "meta.json"):
            assert (out / "tables" / f"{table}.{ext}").is_file(), f"{table}.{ext}"
        side = json.loads((out / "tables" / f"{table}.meta.json").read_text())
        assert side["profile"] == "smoke" and side["data"]  # every result names its profile and data
    for fig in (f for fs in EXPECTED_FIGURES.values() for f in fs):
        for ext in ("png", "svg", "meta.json"):
            assert (out / "figures" / f"{fig}.{ext}").is_file(), f"{fig}.{ext}"
    ablation = pd.read_csv(out / "tables" / "02_ablation.csv")
    assert len(ablation) == 7 and (ablation["seeds"] == 2).all()  # 6 cells + the matched-ε cell x the profile's 2 seeds
    assert ablation["95 % CI low (%)"].notna().all()  # two seeds: every cell has its t interval

    # Report 03 names as trained only the settings that have runs in its table (issue #32).
    html = (out / "html" / "03_augmentation.html").read_text()
    plan = html[html.index(PLAN_MARK):]
    named = re.findall(r"<li><code>([^<]+)</code>", plan[: plan.index("</ul>")])
    ran = set(pd.read_csv(out / "tables" / "03_augment_runs.csv")["setting"])
    assert named and set(named) <= ran, (named, ran)

    # The smoke profile names its execution mode, so a second build of the same commit trains the same runs in
    # the same mode and publishes the same bytes: no published number depends on a timing measurement (issue
    # #28). Notebook 02 trains the ablation grid and settles its claims; its tables are compared byte for byte.
    manifest = (out / "manifest.json").read_text()
    assert '"name": "fp32+contiguous"' in manifest and "named by the smoke profile" in manifest
    second = tmp_path / "second-build"
    done = subprocess.run(reproduce + ["--only", "02", "--results", str(second)], cwd=clone, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = [{p.name: p.read_bytes() for p in sorted((folder / "tables").glob("02_*")) if p.suffix in (".csv", ".md")}
              for folder in (out, second / "scratch" / "smoke-synthetic")]
    assert any(name.startswith("02_ablation") for name in tables[0]) and tables[0] == tables[1]

    # A notebook executed with its default parameters, as in Jupyter: it writes the scratch set too.
    from nbclient import NotebookClient

    before = (out / "tables" / "01_comparison.csv").stat().st_mtime_ns
    nb = nbformat.read(clone / "notebooks" / "01_architecture.ipynb", as_version=4)
    NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(clone / "notebooks")}},
                   kernel_manager_class=pipeline._quiet_kernel_manager()).execute(env=env)
    assert (out / "tables" / "01_comparison.csv").stat().st_mtime_ns > before
    assert _git_status(clone) == ""

    # Re-render without checkpoints: nothing retrained, scores from the run records, a note where none is kept.
    runs_dir = out / "runs"
    trained = sorted(p.name for p in runs_dir.iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/summary.json")}
    assert len(trained) >= 7 * 2 + 2  # ablation cells x seeds, plus the pruning runs (augmentation shares some)
    scores = pd.read_csv(out / "tables" / "04_prune_runs.csv")["score_kaist"]
    for ckpt in runs_dir.glob("*/*.pt"):
        ckpt.unlink()
    lost = sorted(runs_dir.glob("*/derived/score_kaist.json"))[0].parent.parent.name
    shutil.rmtree(runs_dir / lost / "derived")
    done = subprocess.run(reproduce + ["--only", "04,05"], cwd=clone, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in runs_dir.iterdir()) == trained  # no new run
    assert {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/summary.json")} == stamps  # nothing retrained
    again = pd.read_csv(out / "tables" / "04_prune_runs.csv")["score_kaist"]
    rerendered = again.notna() | scores.isna()
    assert rerendered.sum() >= len(scores) - 1  # every score read back but the one whose record was deleted
    html = (out / "html" / "05_scoring.html").read_text()
    assert "Traceback" not in html and "FileNotFoundError" not in html
    assert f"run(s) {lost}" in html and "checkpoints are not committed" in html  # said, not hidden
    assert _git_status(clone) == ""


@pytest.mark.slow
def test_report_links_to_the_docs_resolve_from_the_rendered_report(tmp_path):
    """Notebooks link ``../docs/method.md`` (relative to notebooks/); a report rendered under
    results/<set>/html/ links the same file, and nothing else is touched."""
    from micronet_lib.pipeline.run_notebooks import _render_html

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "See [`docs/method.md`](../docs/method.md#3-architecture), [gone](../docs/nope.md), [web](https://x.org/a).")])
    html_dir = REPO / "results" / "some-set" / "html"
    body = _render_html(nb, html_dir)
    assert 'href="../../../docs/method.md#3-architecture"' in body
    assert (html_dir / "../../../docs/method.md").resolve() == REPO / "docs" / "method.md"
    assert 'href="../docs/nope.md"' in body and 'href="https://x.org/a"' in body  # missing target / absolute: kept
    outside = _render_html(nb, tmp_path / "html")  # outside the repository: no machine path written
    assert 'href="../docs/method.md#3-architecture"' in outside and str(tmp_path) not in outside


def test_wide_tables_scroll_inside_their_output(tmp_path):
    """The setup report's tables of asset URLs and the run plan ran past a 1280-px window."""
    from micronet_lib.pipeline.run_notebooks import _REPORT_CSS, _render_html

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("x")])
    for html_dir in (REPO / "results" / "some-set" / "html", tmp_path / "html"):
        body = _render_html(nb, html_dir)
        head = body[: body.index("</head>")]
        assert _REPORT_CSS in head and ".jp-OutputArea-output { overflow-x: auto; }" in _REPORT_CSS


def test_kernel_shutdown_after_success_sends_no_interrupt():
    """The cause of ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.``: jupyter_client sends
    SIGINT before every shutdown. The pipeline's kernel manager does not (and encrypts, so ipykernel has
    no "running over TCP without encryption" warning to print)."""
    import asyncio
    import signal

    from jupyter_client.manager import AsyncKernelManager

    async def signals_at_shutdown(cls) -> tuple[list[int], str]:
        km = cls(kernel_name="python3")
        await km.start_kernel()
        sent: list[int] = []
        original = km._async_signal_kernel

        async def record(signum):
            sent.append(signum)
            await original(signum)

        km._async_signal_kernel = record
        await km.shutdown_kernel()
        return sent, km.transport_encryption

    quiet = pipeline._quiet_kernel_manager()
    assert asyncio.run(signals_at_shutdown(AsyncKernelManager))[0] == [signal.SIGINT]  # the stock manager does
    sent, encryption = asyncio.run(signals_at_shutdown(quiet))
    assert sent == [] and encryption == "auto"
