"""``micronet score``: summary/JSON output and errors (docs/scoring.md §7.3 values)."""

import json

import pytest

from micronet_lib.cli import main


def test_score_checkpoint_json(asset, capsys):
    path = asset("micronet_v1_pr_60.t7")
    assert main(["score", "--checkpoint", str(path), "--json", "--per-layer"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["params_s"] == 108_108.75
    assert out["summary"]["score"] == pytest.approx(0.0054454, abs=5e-8)
    assert out["table"][0]["path"] == "conv1"


def test_score_model_official_no_freebie(capsys):
    import torch

    # A fresh uniform init hits an exact 0.0 with probability ~2^-24 per weight (a few % over 458k weights),
    # which would add a mask: seed it, so the figure does not depend on the tests that ran before.
    torch.manual_seed(0)
    assert main(["score", "--model", "micronet_v1", "--convention", "official", "--no-freebie"]) == 0
    text = capsys.readouterr().out
    # dense ver1 at fp32, official: adds 38,389,046 + mults 40,776,544 (docs/scoring.md §7.3, freebie off)
    assert "79,165,590.00" in text and "freebie off" in text


def test_score_bad_convention(capsys):
    assert main(["score", "--model", "micronet_v1", "--convention", "nope"]) == 2
    assert "allowed: kaist, official" in capsys.readouterr().err


FACTORY = '''
import torch
import torch.nn as nn

from micronet_lib.scoring import register_module


class Gain(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


register_module(Gain, mults=1, adds=1)


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), Gain(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5))
'''


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "cli_toy_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_score_model_factory_with_weights_and_bits(factory, capsys):
    import torch

    from micronet_lib.scoring import count
    from micronet_lib.scoring.sources import model_from_factory

    net = model_from_factory("cli_toy_nets:build")
    with torch.no_grad():
        net[0].weight[:, 0] = 0  # exact zeros: the weights file must be what is scored
    torch.save(net.state_dict(), factory / "w.pt")
    (factory / "bits.yaml").write_text("param_bits: {'0': 4, '1': 16, '5': 8}\nact_bits: 8\nbias: present\n")
    argv = ["score", "--model-factory", "cli_toy_nets:build", "--weights", str(factory / "w.pt"),
            "--bits-file", str(factory / "bits.yaml"), "--input-size", "1", "3", "8", "8", "--convention", "official",
            "--json", "--per-layer"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    expected = count(net, (1, 3, 8, 8), convention="official", param_bits={"0": 4, "1": 16, "5": 8}, act_bits=8,
                     bias="present").summary
    assert out["summary"]["score"] == expected["score"] and out["summary"]["params"] == (216 - 72) + 16 + 45  # nnz(conv) + Gain + fc
    assert out["summary"]["freebie"] is False and out["summary"]["source"] == "cli_toy_nets:build"
    assert [row["param_bits"] for row in out["table"][:2]] == [4, 16]


@pytest.mark.parametrize("extra, message", [
    (["--model-factory", "no_colon_here"], "must be 'module:function'"),
    (["--model-factory", "cli_toy_nets_missing:build"], "cannot import 'cli_toy_nets_missing'"),
    (["--model-factory", "cli_toy_nets:nope"], "has no attribute 'nope'"),
    (["--model-factory", "cli_toy_nets:build", "--weights", "/nonexistent/w.pt"], "no such file"),
    (["--model-factory", "cli_toy_nets:build", "--bits-file", "BITS"], "unknown key(s) ['param_width']"),
    (["--model", "micronet_v1", "--weights", "w.pt"], "--weights goes with --model-factory"),
])
def test_score_model_factory_errors(factory, capsys, extra, message):
    (factory / "bits.yaml").write_text("param_width: 4\n")
    argv = ["score"] + [str(factory / "bits.yaml") if a == "BITS" else a for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and "\n" not in err


def test_score_model_factory_weights_mismatch(factory, capsys):
    import torch

    torch.save({"other.weight": torch.zeros(2)}, factory / "bad.pt")
    assert main(["score", "--model-factory", "cli_toy_nets:build", "--weights", str(factory / "bad.pt")]) == 2
    assert "does not fit the model: missing ['0.weight'" in capsys.readouterr().err


def test_score_weights_shape_mismatch_is_one_line(factory, capsys):
    import torch

    from micronet_lib.scoring.sources import model_from_factory

    state = model_from_factory("cli_toy_nets:build").state_dict()
    state["5.weight"], state["5.bias"] = torch.zeros(7, 8), torch.zeros(7)  # trained for 7 classes, not 5
    torch.save(state, factory / "seven.pt")
    assert main(["score", "--model-factory", "cli_toy_nets:build", "--weights", str(factory / "seven.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "2 shape mismatch(es), first 5.weight (7, 8) in the file, (5, 8) in the model" in err


def test_score_says_what_was_omitted_and_declared_free(capsys):
    assert main(["score", "--model", "micronet_v1"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("accounting"))
    # kaist: the SE gate multiply and the residual add of the 13 stride-1 blocks (docs/scoring.md §5.2)
    assert "omitted by kaist: 26 op(s) (add (add) x13, scale (mul) x13)" in line
    assert "declared free: 64 row(s) (BatchNorm2d x53, Identity x9, Dropout x1, Flatten x1)" in line
    assert main(["score", "--model", "micronet_v1", "--convention", "official"]) == 0
    assert "omitted by official: none" in capsys.readouterr().out
