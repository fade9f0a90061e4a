"""JupyterLab as a way in (issue #12): ``micronet lab`` serves, notebooks run through a kernel without
touching the repository, and the check cell can be re-run after editing a parameter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from micronet_lib.cli.lab import lab_environment, lab_url
from micronet_lib.pipeline import parameter_cell_names, user_namespace

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def _git_status() -> str:
    return subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=True).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_home(tmp_path, monkeypatch):
    """Private Jupyter/IPython config, data and runtime folders, so no user setting leaks in or out."""
    dirs = {}
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        dirs[var] = tmp_path / var.lower()
        dirs[var].mkdir()
        monkeypatch.setenv(var, str(dirs[var]))
    return dirs


# ------------------------------------------------------------------ which names are parameters


PARAMS_CELL = "# Parameters (defaults)\nprofile = 'smoke'\nepochs = 2\n"


def test_parameter_cells_are_the_last_block_of_literal_assignments():
    history = ["", PARAMS_CELL, "# Parameters\nepochs = 3\nepoch = 4\n", "params = check(...)"]
    assert parameter_cell_names(history) == ["profile", "epochs", "epoch"]  # parameters + papermill's cell
    later = history + ["import numpy as np\nax = 1", "LEADERBOARD = {'a': 0.1}", "x = 1 + 1"]
    assert parameter_cell_names(later) == ["profile", "epochs", "epoch"]  # other cells are not parameters
    fixed = later + ["# Parameters (defaults)\nprofile = 'smoke'\nepochs = 5\n", "check"]
    assert parameter_cell_names(fixed) == ["profile", "epochs"]  # the typo fixed since is forgotten
    assert parameter_cell_names(["", "import os", "x = f(1)"]) is None


def test_user_namespace_checks_parameters_not_every_global():
    ns = {"In": ["", PARAMS_CELL, "ax = 1\nCONVENTIONS = ('kaist',)", "# Parameters\nepoch = 3\n"],
          "profile": "smoke", "epochs": 2, "ax": 1, "CONVENTIONS": ("kaist",), "epoch": 3}
    assert user_namespace(ns) == {"profile": "smoke", "epochs": 2, "epoch": 3}


# ------------------------------------------------------------------ re-running the check cell in a kernel


def _cells(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    return nb, nb.cells[i], nb.cells[i + 1]


def test_check_cell_reruns_after_editing_a_parameter(jupyter_home):
    """What a JupyterLab user does: run, define more globals, edit one parameter, re-run the check cell."""
    nb, params_cell, check_cell = _cells("02_regularizers.ipynb")
    edited = nbformat.v4.new_code_cell(params_cell.source.replace("\nepochs = 2\n", "\nepochs = 3\n"))
    assert edited.source != params_cell.source
    later = nbformat.v4.new_code_cell("import numpy as np\nax, axes = None, []\nCONVENTIONS = ('kaist', 'official')\n"
                                      "LEADERBOARD = {'micronet_v2_pr_60': 0.0056}\nmeta = dict(profile=profile)")
    probe = nbformat.v4.new_code_cell("print(params['epochs'], sorted(params) == sorted(PARAMS_SEEN))")
    typo = nbformat.v4.new_code_cell(params_cell.source + "\nepoch = 4\n")
    injected = nbformat.v4.new_code_cell("# Parameters\nepochs = 3\nwidth = 0.5\n")
    client = NotebookClient(nb, kernel_name="python3", timeout=120)
    with client.setup_kernel():
        def run(cell):
            return client.execute_cell(cell, 0)

        run(params_cell)
        run(check_cell)
        run(later)
        run(edited)
        run(later)  # cells run in any order after the edit
        run(check_cell)
        run(nbformat.v4.new_code_cell("from micronet_lib.pipeline import notebook_parameter_names\n"
                                      f"PARAMS_SEEN = notebook_parameter_names({str(NOTEBOOKS / '02_regularizers.ipynb')!r})"))
        out = run(probe)
        assert out.outputs[0]["text"].split() == ["3", "True"]
        run(typo)  # a misspelt name in the parameters cell is still caught ...
        with pytest.raises(CellExecutionError, match=r"unknown notebook parameter\(s\) epoch;"):
            run(check_cell)
        run(edited)  # ... and forgotten once fixed, although the kernel still holds `epoch`
        run(check_cell)
        run(params_cell)
        run(injected)  # an unknown name papermill injects fails, as before
        with pytest.raises(CellExecutionError, match=r"unknown notebook parameter\(s\) width;"):
            run(check_cell)


# ------------------------------------------------------------------ the server


def test_lab_prefers_this_environments_kernel(jupyter_home, tmp_path):
    """A user-level ``python3`` kernelspec pointing elsewhere does not replace this environment's kernel."""
    user_spec = jupyter_home["JUPYTER_DATA_DIR"] / "kernels" / "python3"
    user_spec.mkdir(parents=True)
    (user_spec / "kernel.json").write_text(json.dumps({"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f",
                                                                "{connection_file}"], "display_name": "elsewhere",
                                                       "language": "python"}))
    code = ("from jupyter_client.manager import KernelManager\n"
            "km = KernelManager(kernel_name='python3')\nprint(km.format_kernel_cmd()[0])")
    out = subprocess.run([sys.executable, "-c", code], env=lab_environment(), capture_output=True, text=True, check=True).stdout
    assert out.strip() == sys.executable


@pytest.mark.slow
def test_lab_serves_and_runs_a_notebook_without_touching_the_repository(jupyter_home, tmp_path, monkeypatch):
    before = _git_status()
    port, token = _free_port(), "micronet-test-token"
    cmd = [sys.executable, "-m", "micronet_lib", "lab", "--port", str(port), "--token", token, "--no-browser"]
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        url = lab_url(ip="127.0.0.1", port=port, token=token)
        status, deadline = None, time.monotonic() + 120  # a deadline to wait for start-up, not a speed check
        while status is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    status = resp.status
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert status == 200, (tmp_path / "lab.log").read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=10) as resp:
            specs = json.load(resp)
        assert specs["default"] == "python3" and "python3" in specs["kernelspecs"]
        with pytest.raises(urllib.error.HTTPError, match="403"):  # the token is required
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs", timeout=10)

        # The cheapest notebook, default parameters (the smoke profile), through a python3 kernel;
        # its tables go to a temporary results folder (MICRONET_RESULTS, what `reproduce` sets).
        monkeypatch.setenv("MICRONET_RESULTS", str(tmp_path / "results"))
        monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
        nb = nbformat.read(NOTEBOOKS / "00_setup.ipynb", as_version=4)
        NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors
        assert (tmp_path / "results" / "tables" / "00_plan.csv").is_file()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert server.returncode is not None
    assert _git_status() == before  # nothing written into the repository


def test_make_lab_passes_the_headless_options():
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab", "LAB_PORT=8899", "LAB_TOKEN=abc", "LAB_BROWSER=no",
                          "LAB_IP=0.0.0.0"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if " lab " in line + " ")
    assert line.split()[1:] == ["lab", "--port", "8899", "--ip", "0.0.0.0", "--token", "abc", "--no-browser"]
    assert lab_url(ip="0.0.0.0", port=8899, token="abc") == "http://127.0.0.1:8899/lab?token=abc"
