"""The authors' released checkpoints (docs/method.md §4): exact logits, masks, sparsity, strict loading, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import unavailable
from micronet_lib.models import RELEASED_CHECKPOINTS, build_model, load_checkpoint, load_released
from micronet_lib.models.checkpoints import read_state_dict
from micronet_lib.models.masks import masked_modules

LOGIT_ATOL = 1e-4  # issue #3 acceptance: max |Δ| ≤ 1e-4 vs the authors' logits (docs/method.md §4.7)
NAMES = list(RELEASED_CHECKPOINTS)
N_MASKS = 86  # docs/method.md §4.4
N_ENTRIES = 470  # docs/method.md §4.2


def reference_dir() -> Path:
    """``MICRONET_REFERENCE``, else ``<first MICRONET_ASSETS entry>/../reference``."""
    explicit = os.environ.get("MICRONET_REFERENCE")
    if explicit:
        return Path(explicit)
    mirrors = [p for p in os.environ.get("MICRONET_ASSETS", "").split(os.pathsep) if p.strip()]
    return Path(mirrors[0]).expanduser() / ".." / "reference" if mirrors else Path("reference-not-configured")


@pytest.fixture(scope="module")
def reference_logits():
    path = reference_dir() / "kaist_logits.npz"
    if not path.is_file():
        unavailable(f"reference logits not found at {path}: set MICRONET_REFERENCE (or MICRONET_ASSETS)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def released_path(asset):
    return lambda name: asset(RELEASED_CHECKPOINTS[name].filename)


@pytest.mark.assets
@pytest.mark.parametrize("name", NAMES)
def test_logits_match_the_authors(name, released_path, reference_logits):
    released_path(name)  # skip/fail through the asset fixture when the file is missing
    model = load_released(name)
    assert not model.training
    with torch.no_grad():
        logits = model(torch.from_numpy(reference_logits["input"])).numpy()
    diff = np.abs(logits - reference_logits[f"logits_{name}"]).max()
    assert diff <= LOGIT_ATOL


@pytest.mark.assets
@pytest.mark.parametrize("name", NAMES)
def test_masks_sparsity_and_key_order(name, released_path):
    path = released_path(name)
    model = load_released(name)
    masked = dict(masked_modules(model))
    assert len(masked) == N_MASKS
    nnz = sum(int(torch.count_nonzero(m.weight)) for m in masked.values())
    assert nnz == RELEASED_CHECKPOINTS[name].nonzero_weights
    assert all(torch.equal(m.mask, (m.weight != 0).float()) for m in masked.values())  # docs/method.md §4.4
    assert all(p.device.type == "cpu" for p in model.state_dict().values())
    raw, meta = read_state_dict(path)
    assert meta == {} and len(raw) == N_ENTRIES
    assert list(model.state_dict()) == list(raw)  # masked model reproduces the file's key order exactly


@pytest.mark.assets
def test_pruned_weights_stay_zero_while_training(released_path):
    released_path("micronet_v2_pr_60")
    model = load_released("micronet_v2_pr_60").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 3, 16, 16)).logsumexp(1).sum().backward()
        opt.step()
    model(torch.randn(1, 3, 16, 16))  # the forward pre-hooks re-zero pruned entries
    assert all(int(torch.count_nonzero(m.weight[m.mask == 0])) == 0 for _, m in masked_modules(model))


@pytest.mark.assets
def test_load_checkpoint_accepts_a_path_a_wrapper_and_prefixes(released_path, tmp_path):
    path = released_path("micronet_v1_pr_60")
    state = torch.load(path, map_location="cpu", weights_only=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = load_released("micronet_v1_pr_60")(x)
        torch.save(state, tmp_path / "plain.pt")
        torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "wrapped.pt")
        for f in ("plain.pt", "wrapped.pt"):
            model = load_checkpoint(tmp_path / f)
            assert len(dict(masked_modules(model))) == N_MASKS
            torch.testing.assert_close(model(x), want, rtol=0, atol=0)


def test_load_checkpoint_infers_version_and_honours_arch(tmp_path):
    torch.manual_seed(0)
    v2 = build_model("micronet_v2", num_classes=10)
    torch.save(v2.state_dict(), tmp_path / "v2.pt")
    loaded = load_checkpoint(tmp_path / "v2.pt")
    assert loaded.config.version == "ver2" and loaded.num_classes == 10 and not loaded.training
    assert load_checkpoint(tmp_path / "v2.pt", model="micronet_v2").num_classes == 10  # class count from the file
    small = build_model("micronet_v1", num_classes=10, width_mult=0.5)
    arch = {"name": "micronet_v1", "options": {"num_classes": 10, "width_mult": 0.5}}
    torch.save({"model": small.state_dict(), "arch": arch}, tmp_path / "small.pt")
    assert load_checkpoint(tmp_path / "small.pt").conv1.out_channels == 16
    torch.save(small.state_dict(), tmp_path / "small_bare.pt")
    with pytest.raises(ValueError, match="matches no MicroNet"):
        load_checkpoint(tmp_path / "small_bare.pt")


def test_wrong_class_count_is_rejected(tmp_path):
    torch.save(build_model("micronet_v2", num_classes=10).state_dict(), tmp_path / "ten.pt")
    with pytest.raises(ValueError, match="10 classes.*num_classes=100"):
        load_checkpoint(tmp_path / "ten.pt", num_classes=100)
    with pytest.raises(ValueError, match="100 classes.*num_classes=10"):
        load_released("micronet_v1_pr_60", num_classes=10)


def test_other_architecture_is_rejected(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=100).state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(ValueError, match="not a MicroNet checkpoint"):
        load_checkpoint(tmp_path / "resnet.pt")
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(tmp_path / "resnet.pt", model="micronet_v1")


def test_corrupt_masks_are_rejected(tmp_path):
    model = build_model("micronet_v1")
    state = model.state_dict()
    mask = torch.ones_like(state["layers.3.conv1.weight"])
    mask[0] = 0  # weights under this zero mask are nonzero: inconsistent
    state["layers.3.conv1.mask"] = mask
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"layers\.3\.conv1\.weight has \d+ nonzero entries where its mask is 0"):
        load_checkpoint(tmp_path / "bad.pt")
    state["linear.mask"] = torch.ones(3, 3)
    torch.save(state, tmp_path / "bad_shape.pt")
    with pytest.raises(ValueError, match="linear.mask"):
        load_checkpoint(tmp_path / "bad_shape.pt")


def test_not_a_checkpoint_and_unknown_names(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not a checkpoint\n")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state_dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="micronet_v2_pr_60"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown released checkpoint 'micronet_v3_pr_60'.*micronet_v1_pr_60"):
        load_released("micronet_v3_pr_60")


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--model", "resnet9000"], "unknown model 'resnet9000'"),
        (["--checkpoint", "{tmp}/notes.txt"], "not a readable PyTorch checkpoint"),
        (["--checkpoint", "{tmp}/ten.pt", "--num-classes", "100"], "has 10 classes"),
        (["--checkpoint", "{tmp}/resnet.pt"], "not a MicroNet checkpoint"),
    ],
)
def test_cli_reports_one_error_line(argv_tail, message, tmp_path, capsys):
    """Bad input to ``micronet eval`` → exit 2 and a single ``error:`` line, before any data is loaded."""
    from micronet_lib.cli import main

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save(build_model("micronet_v2", num_classes=10).state_dict(), tmp_path / "ten.pt")
    torch.save({"fc.weight": torch.zeros(100, 512), "conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pt")
    argv = ["eval", "--data", "cifar100", "--device", "cpu"] + [a.format(tmp=tmp_path) for a in argv_tail]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
