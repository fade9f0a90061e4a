"""FastAA op by op over the images that drew it (augment/grouped.py, issue #33) equals the per-image loop and PIL."""

from __future__ import annotations

import pytest
import torch
from test_augment import PIL_TOL, _batch, _pil, _tensor

from micronet_lib.augment import FASTAA_4X_ORDER, OPS, FastAAStage, apply_op, op_magnitude, policy_set
from micronet_lib.augment.grouped import apply_op_batch
from micronet_lib.augment.pil_ops import pil_apply_op


def _images(n: int = 24) -> torch.Tensor:
    """Smooth images, noise, and images with a constant channel (AutoContrast's flat case)."""
    g = torch.Generator().manual_seed(7)
    noise = torch.randint(0, 256, (n // 3, 3, 32, 32), generator=g, dtype=torch.uint8)
    flat = torch.randint(90, 140, (n // 3, 3, 32, 32), generator=g, dtype=torch.uint8)
    flat[:, 1] = 77
    return torch.cat([_batch(n - 2 * (n // 3), seed=5), noise, flat])


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_on_a_batch_equals_it_per_image_and_pil(name):
    images = _images(12)
    centres = [(1.0 + 31.0 * k / len(images), 31.5 - 30.0 * k / len(images)) for k in range(len(images))]
    for level in (0.0, 0.37, 1.0):
        for v in (op_magnitude(name, level), -op_magnitude(name, level)) if OPS[name].signed else (op_magnitude(name, level),):
            out = apply_op_batch(images, name, v, centres=centres if name == "Cutout" else None)
            for k, img in enumerate(images):
                centre = centres[k] if name == "Cutout" else None
                assert torch.equal(out[k], apply_op(img, name, v, centre=centre)), f"{name} v={v} image {k}"
                ref = _tensor(pil_apply_op(_pil(img), name, v, centre=centres[k]))
                assert (out[k].int() - ref.int()).abs().max().item() <= PIL_TOL.get(name, 0), f"{name} v={v} vs PIL"


def _every_op_policy() -> list:
    """Sub-policies pairing every op with every other at fixed levels, each op firing with p = 0.8."""
    names = list(OPS)
    return [((a, 0.8, (i % 5) / 4), (b, 0.8, (j % 3) / 2)) for i, a in enumerate(names) for j, b in enumerate(names)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_stage_equals_the_per_image_loop(seed):
    images = _images(48)
    loop = FastAAStage(_every_op_policy(), name="every-op", grouped=False)
    grouped = FastAAStage(_every_op_policy(), name="every-op", grouped=True)
    a = loop(images, torch.Generator().manual_seed(seed))
    b = grouped(images, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    assert not torch.equal(a, images)


def test_grouped_fastaa4x_sets_equal_the_per_image_loop():
    from micronet_lib import assets

    try:
        sets = [policy_set(name) for name in FASTAA_4X_ORDER]
    except assets.AssetUnavailableError as exc:
        from conftest import unavailable

        unavailable(str(exc))
    images = _images(96)
    for k, subs in enumerate(sets):
        a = FastAAStage(subs, grouped=False)(images, torch.Generator().manual_seed(k))
        b = FastAAStage(subs, grouped=True)(images, torch.Generator().manual_seed(k))
        assert torch.equal(a, b), FASTAA_4X_ORDER[k]


def test_grouping_is_the_default_on_cuda_only(monkeypatch):
    from micronet_lib.augment import grouped

    calls = []
    monkeypatch.setattr(grouped, "apply_grouped", lambda *args: calls.append(args) or args[1].clone())
    FastAAStage(_every_op_policy())(_images(6), torch.Generator().manual_seed(0))
    assert calls == []  # a CPU batch takes the per-image loop unless grouped=True
    FastAAStage(_every_op_policy(), grouped=True)(_images(6), torch.Generator().manual_seed(0))
    assert len(calls) == 1
