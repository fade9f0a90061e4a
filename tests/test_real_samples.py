"""Real CIFAR-100 pixels (issue #11): the 20 sample PNGs through the project's own decoding and
normalisation give the authors' code's logits and top-1 hits on the released checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import unavailable
from test_released import reference_dir
from micronet_lib.data import cifar100_test_head, load_labelled_samples
from micronet_lib.experiments import sample_hits, sample_logits

LOGIT_ATOL = 1e-4  # float32 rounding, as for the random-input reference logits
AUTHORS_HITS = {"micronet_v1_pr_60": 17, "micronet_v2_pr_15": 16, "micronet_v2_pr_30": 16,
                "micronet_v2_pr_45": 16, "micronet_v2_pr_60": 17}  # the authors' code on these 20 images (docs/method.md §4.7)


def _samples_dir() -> Path:
    root = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
    if not root or not (Path(root) / "cifar100-samples").is_dir():
        unavailable("real CIFAR-100 samples not found: set MICRONET_IMAGEFOLDER_ROOT to a folder holding cifar100-samples/")
    return Path(root) / "cifar100-samples"


def _reference() -> dict:
    path = reference_dir() / "kaist_cifar100_samples.npz"
    if not path.is_file():
        unavailable(f"reference {path} not found: set MICRONET_REFERENCE (or MICRONET_ASSETS)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_sample_folder_decodes_to_the_reference_pixels_and_labels():
    split, indices = load_labelled_samples(_samples_dir())
    ref = _reference()
    assert indices == tuple(range(20))
    assert torch.equal(split.images, torch.from_numpy(ref["images"]).permute(0, 3, 1, 2))  # lossless PNG
    assert split.labels.tolist() == ref["labels"].tolist()


def test_test_head_falls_back_to_the_sample_folder(tmp_path):
    split, source = cifar100_test_head(20, samples=_samples_dir(), root=tmp_path)  # no pickles under tmp_path
    assert len(split) == 20 and "sample PNGs" in source
    with pytest.raises(ValueError, match="need 0..20"):
        cifar100_test_head(21, samples=_samples_dir(), root=tmp_path)


def test_bad_sample_names_and_missing_folder_are_clear_errors(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"")
    with pytest.raises(ValueError, match="expected a name like"):
        load_labelled_samples(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_labelled_samples(tmp_path / "absent")


@pytest.mark.assets
def test_released_logits_and_hits_on_real_pixels_match_the_authors(asset):
    from micronet_lib.models import load_released
    from micronet_lib.models.checkpoints import RELEASED_CHECKPOINTS

    split, _ = load_labelled_samples(_samples_dir())
    ref = _reference()
    models = {}
    for name in AUTHORS_HITS:
        asset(RELEASED_CHECKPOINTS[name].filename)  # skip/fail through the asset fixture when missing
        models[name] = load_released(name)
    logits = sample_logits(models, split.images)
    for name, z in logits.items():
        assert np.abs(z - ref[f"logits_{name}"]).max() <= LOGIT_ATOL, name
    table = sample_hits(logits, split.labels).set_index("checkpoint")
    assert table["top-1 hits"].to_dict() == AUTHORS_HITS
    assert (table["images"] == 20).all() and (table["95 % Wilson low (%)"] < 70).all()  # 20 images: wide
