"""``micronet score --model-factory … --num-classes N`` (issue #32): the head width reaches the factory, or
the command is refused with one line; it never scores another head size without a word."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch.nn as nn

from micronet_lib.scoring.sources import model_from_factory


@pytest.fixture()
def factories(tmp_path, monkeypatch):
    (tmp_path / "tiny_factories.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        def with_classes(num_classes=1000):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))

        def fixed():
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_num_classes_reaches_a_factory_that_takes_it(factories):
    model = model_from_factory("tiny_factories:with_classes", num_classes=100)
    assert isinstance(model[1], nn.Linear) and model[1].out_features == 100
    assert model_from_factory("tiny_factories:with_classes")[1].out_features == 1000


def test_num_classes_refused_for_a_factory_without_it(factories):
    with pytest.raises(ValueError, match="takes no num_classes argument"):
        model_from_factory("tiny_factories:fixed", num_classes=100)


def test_cli_scores_torchvision_resnet18_at_100_classes():
    args = ["--model-factory", "torchvision.models:resnet18", "--num-classes", "100", "--json"]
    out = subprocess.run([sys.executable, "-m", "micronet_lib", "score", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json

    params = json.loads(out.stdout)["summary"]["params"]
    # resnet18 has 11,689,512 parameters with its 1,000-class head; 100 classes drop 900 × 513 of them.
    assert params == pytest.approx(11_689_512 - 900 * 513, rel=0.01)


def test_cli_refuses_num_classes_for_a_factory_without_it(factories):
    out = subprocess.run([sys.executable, "-m", "micronet_lib", "score", "--model-factory", "tiny_factories:fixed",
                          "--num-classes", "100", "--input-size", "1", "3", "4", "4"], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "num_classes" in lines[0]
