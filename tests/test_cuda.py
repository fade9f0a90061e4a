"""The CUDA path (issue #13): augmentation on the device, a paper-recipe fit, compiled training.

These run only where a CUDA GPU is present (``scripts/gpu-check.sh`` runs them first on the lent GPU;
the project's CI has none, so pytest reports them as skipped there, not passed). The first GPU check
found two FastAA ops that mixed CPU constants into CUDA images; these tests keep that from returning.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from micronet_lib.augment import OPS, apply_op, build_pipeline, op_magnitude

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_fastaa_op_runs_on_cuda_as_on_cpu(name):
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 32, 32), generator=gen, dtype=torch.uint8)
    centre = (12.0, 20.0) if name == "Cutout" else None
    for level in (0.2, 0.9):
        v = op_magnitude(name, level)
        on_cpu = apply_op(img, name, v, centre=centre)
        on_gpu = apply_op(img.to(CUDA), name, v, centre=centre)
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
        # integer kernels agree exactly; float kernels (Sharpness' blur) may round one level apart
        assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1, f"{name} at v={v}"


@pytest.mark.parametrize("name", ["Color", "Contrast"])
def test_pil_grey_ops_stay_exact_under_tf32(name):
    """fit augments on the device inside its TF32 setting; PIL's fixed-point grey must not go through a
    TF32 matmul, which may round the weights 19595, 38470 and 7471 to 11 significant bits."""
    from micronet_lib.accel.tf32 import fp32_mode

    img = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    on_cpu = apply_op(img, name, 1.7)
    with fp32_mode(allow_tf32=True):
        on_gpu = apply_op(img.to(CUDA), name, 1.7)
    assert torch.equal(on_gpu.cpu(), on_cpu)


def test_fastaa4x_batch_on_cuda_matches_cpu():
    pipeline = build_pipeline("fastaa4x", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for copy in range(pipeline.copies_per_epoch):
        on_cpu = pipeline(images, copy=copy, generator=torch.Generator().manual_seed(copy))
        on_gpu = pipeline(images.to(CUDA), copy=copy, generator=torch.Generator().manual_seed(copy))
        assert on_gpu.device.type == "cuda"
        assert (on_gpu.cpu() - on_cpu).abs().max() <= 1.0 / 255 / 0.25 + 1e-5  # at most one grey level


def test_paper_recipe_fit_on_cuda_records_a_cuda_mode(tmp_path, monkeypatch):
    from micronet_lib.train import TrainConfig, fit

    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path / "cache"))
    # smoke sizes, paper recipe: FastAA 4x on the device, CutMix, weighted LS, ortho, mode auto (compile included)
    config = TrainConfig.from_profile("smoke", device="cuda", augment="fastaa4x", mix="cutmix", loss="wls",
                                      cycles=1, epochs_per_cycle=1, prune_rates=None)
    summary = fit(config, tmp_path / "run", progress=False)
    assert summary["status"] == "finished"
    record = json.loads((tmp_path / "run" / "execution.json").read_text())
    assert record["machine"].startswith("cuda:") and record["train"]["source"] == "calibrated", record
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and math.isfinite(json.loads(lines[0])["loss"])
