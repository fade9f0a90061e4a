"""micronet_lib.report.explore (issue #12): widgets in a live kernel, a static table + PNG in headless report runs."""

from __future__ import annotations

import re

import base64

import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image

from micronet_lib.report import explore
from micronet_lib.progress import bars_enabled, interactive

SETUP = """
import torch
from micronet_lib.report import explore
from micronet_lib.models import build_model
torch.manual_seed(0)
tiny = build_model("micronet_v2", num_classes=10, width_mult=0.25, depth_mult=0.5).eval()
images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
"""
CALLS = [
    "explore.count_explorer({'tiny': tiny}, convention='official', rows=5)",
    "explore.similarity_explorer({'random': torch.randn(100, 16)}, cls='maple_tree', k=5)",
    "explore.augmentation_explorer(images, ['baseline', 'cutout'], pipeline='cutout', n=4)",
    "explore.oneshot_explorer(tiny, name='tiny', rate=50)",
]


def _outputs(nb, first: int) -> list:
    return [cell.outputs for cell in nb.cells[first:first + len(CALLS)]]


def _pngs(outputs) -> list[Image.Image]:
    """The figures shown: inline ``<img>`` PNGs, each with alt text (nbconvert warns on an image without)."""
    import io
    import re

    found = []
    for o in outputs:
        if o.output_type == "display_data":
            for data, _alt in re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', o["data"].get("text/html", "")):
                found.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return found


def _tables(outputs) -> list:
    """The HTML outputs that are not figures."""
    return [o for o in outputs if "<img" not in o.get("data", {}).get("text/html", "<img")]


WIDGET = "application/vnd.jupyter.widget-view+json"


def test_explorers_draw_a_static_view_in_headless_runs(tmp_path, monkeypatch):
    """As `micronet reproduce` runs them (TQDM_DISABLE=1), in a kernel: a table and a PNG, no widget."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), *[nbformat.v4.new_code_cell(c) for c in CALLS]]
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in nb.cells:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    static = _outputs(nb, 1)
    for call, out in zip(CALLS, static):
        pngs = _pngs(out)
        assert len(pngs) == 1, call  # one figure, as a PNG (not "<Figure size ...>" text)
        assert min(pngs[0].size) > 150 and np.asarray(pngs[0].convert("L")).std() > 5, call  # not blank
        assert not any(WIDGET in o.get("data", {}) for o in out), call
    counts = _tables(static[0])
    assert len(counts) == 2 and "params_s" in counts[0]["data"]["text/html"].replace("<wbr>", "")  # score terms + top layers
    assert "tiny (official)" in counts[0]["data"]["text/html"]
    oneshot = [o["data"]["text/html"].replace("<wbr>", "") for o in _tables(static[3])]
    assert "score_kaist" in oneshot[0] and "<td>50</td>" in oneshot[0]  # through the reports' formatter
    assert not re.search(r"<td>\d+\.0</td>", counts[0]["data"]["text/html"] + oneshot[0])  # no raw floats (229119.0)


def test_explorers_are_ipywidgets_that_redraw_when_a_control_moves(monkeypatch):
    """Live (JupyterLab): each explorer is an ``ipywidgets.interact`` box; moving a control re-runs its view.

    In-process with real widgets (no kernel): executing ``interact`` through nbclient can block
    intermittently (jupyter/nbclient#312, nteract/papermill#723), which is also why headless report
    runs draw the static view instead.
    """
    import ipywidgets

    made = []

    def spy(view, **controls):
        calls = []

        def recorded(**kwargs):
            calls.append(kwargs)
            return view(**kwargs)

        made.append((ipywidgets.interactive(recorded, **controls), calls))

    monkeypatch.setattr(explore, "interactive", lambda: True)
    monkeypatch.setattr(ipywidgets, "interact", spy)
    torch.manual_seed(0)
    from micronet_lib.models import build_model

    tiny = build_model("micronet_v2", num_classes=10, width_mult=0.25, depth_mult=0.5).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    explore.count_explorer({"tiny": tiny, "tiny again": tiny}, rows=5)
    explore.similarity_explorer({"random": torch.randn(100, 16)}, cls="maple_tree", k=5)
    explore.augmentation_explorer(images, ["baseline", "cutout"], n=4)
    explore.oneshot_explorer(tiny, name="tiny", rate=50)
    moves = [("model", "tiny again"), ("class", "oak_tree"), ("pipeline", "cutout"), ("rate (%)", 30.0)]
    for (box, calls), (control, value) in zip(made, moves):
        widgets = {w.description: w for w in box.children if hasattr(w, "description")}
        assert control in widgets and len(calls) == 1  # drawn once for the defaults
        widgets[control].value = value
        assert len(calls) == 2 and value in calls[1].values()  # and again for the new value
    assert [sorted(d.description for d in b.children if hasattr(d, "description") and d.description) for b, _ in made] == [
        ["convention", "model"], ["checkpoint", "class"], ["pipeline", "seed"], ["rate (%)"]]


def test_progress_switch_follows_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not bars_enabled() and not interactive()
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert bars_enabled() and not interactive()  # no Jupyter kernel in pytest
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/01_architecture.ipynb")  # a JupyterLab session's kernel...
    assert not interactive()  # ...but still no kernel in this process


def test_widgets_only_where_a_frontend_watches(tmp_path, monkeypatch):
    """A kernel run by nbclient (no Jupyter server session) draws the static view: interact could block there."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from micronet_lib.progress import interactive\nprint(interactive())"),
                nbformat.v4.new_code_cell("import os\nos.environ['JPY_SESSION_NAME'] = 'x.ipynb'\nprint(interactive())")]
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert [c.outputs[0]["text"].strip() for c in nb.cells] == ["False", "True"]


def test_bad_choices_fail_before_any_work():
    with pytest.raises(ValueError, match="convention='ops' is not available; choose one of 'kaist', 'official'"):
        explore.count_explorer({"m": torch.nn.Linear(2, 2)}, convention="ops")
    with pytest.raises(ValueError, match="cls='maple' is not available"):
        explore.similarity_explorer({"w": torch.zeros(100, 4)}, cls="maple")
    with pytest.raises(ValueError, match=r"rate=100 must lie in \[0, 100\)"):
        explore.oneshot_explorer(torch.nn.Linear(2, 2), rate=100)


def test_sample_images_prefers_real_photographs(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRONET_IMAGEFOLDER_ROOT", str(tmp_path))
    monkeypatch.setenv("MICRONET_DATA", str(tmp_path / "nothing"))
    assert explore.sample_images(4) is None  # nothing here: the notebook uses the run's own images
    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / "cifar10-jpeg" / "test" / cls).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(tmp_path / "cifar10-jpeg" / "test" / cls / "0.png")
    images, source = explore.sample_images(4)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and source.startswith("CIFAR-10")
    assert images[0].float().mean() < 20 < 190 < images[1].float().mean()  # one per class, in class order
    (tmp_path / "cifar100-samples").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "cifar100-samples" / "a.png")
    assert explore.sample_images(4)[1] == "CIFAR-100 test samples"
