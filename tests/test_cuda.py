"""The CUDA path (issues #13, #33): augmentation on the device, a paper-recipe fit, the captured training step.

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


# ---------------------------------------------------------------------- issue #33: grouped FastAA, the captured step
@pytest.mark.parametrize("grouped", [True, False])
def test_fastaa_grouped_and_per_image_on_cuda_match_the_cpu_loop(grouped):
    from micronet_lib.augment import FASTAA_4X_ORDER, FastAAStage, policy_set

    images = torch.randint(0, 256, (128, 3, 32, 32), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    for k, name in enumerate(FASTAA_4X_ORDER):
        on_cpu = FastAAStage(policy_set(name), grouped=False)(images, torch.Generator().manual_seed(k))
        on_gpu = FastAAStage(policy_set(name), grouped=grouped)(images.to(CUDA), torch.Generator().manual_seed(k))
        assert on_gpu.device.type == "cuda"
        # integer kernels agree exactly; Sharpness' float blur may round one level apart (as per op above)
        assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1, name


def _recipe_steps(kind: str, n_steps: int):
    """Parameters and BN statistics after ``n_steps`` paper-recipe steps of ``kind`` from the same start."""
    import copy

    from micronet_lib.accel.execution import ExecutionMode
    from micronet_lib.models import build_model
    from micronet_lib.pruning import prune_to_rate
    from micronet_lib.regularizers import cutmix, make_loss
    from micronet_lib.train import TrainConfig
    from micronet_lib.train.step import make_step

    torch.manual_seed(0)
    model = build_model("micronet_v2", num_classes=100)
    prune_to_rate(model, 30.0)
    model = copy.deepcopy(model).to(CUDA).train()
    loss_fn = make_loss("wls", num_classes=100, epsilon=0.3).to(CUDA)
    loss_fn.update_similarity(model)
    config = TrainConfig(batch_size=64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-5)
    step = make_step(kind, model, model, loss_fn, optimizer, config=config, mode=ExecutionMode(), device=CUDA, scaler=None)
    step.set_lr(0.05)
    gen = torch.Generator().manual_seed(1)
    for i in range(n_steps):
        x = torch.randn(64, 3, 32, 32, generator=gen)
        y = torch.randint(0, 100, (64,), generator=gen)
        x, y_a, y_b, lam = cutmix(x, y, generator=gen)
        torch.cuda.manual_seed(10 + i)  # dropout and the orthogonality start vectors
        step(x.to(CUDA), y_a.to(CUDA), y_b.to(CUDA), lam)
    torch.cuda.synchronize()
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["graph", "compile"])
def test_captured_step_matches_the_eager_step_after_n_steps(kind, monkeypatch):
    """8 steps: 3 eager warm-up steps, the capture, then replays; fused SGD (device lr) rounds within tolerance.
    Dropout and the orthogonality vectors must draw the eager step's numbers (a graph replays the generator's
    offsets; inductor is told to use the eager random functions)."""
    if kind == "compile":
        import torch._inductor.config as inductor_config

        monkeypatch.setattr(inductor_config, "fallback_random", True)
    eager, captured = _recipe_steps("off", 8), _recipe_steps(kind, 8)
    for key, value in eager.items():
        if value.is_floating_point():
            assert torch.allclose(captured[key], value, rtol=1e-3, atol=1e-5), key
        else:
            assert torch.equal(captured[key], value), key
