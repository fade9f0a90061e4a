"""Augmentation (docs/method.md §5.1, §5.2, §7): FastAA ops vs PIL, policy sets, pipelines, gallery, bench."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from micronet_lib.augment import (
    CUTOUT_FILL,
    FASTAA_4X_ORDER,
    OPS,
    FastAAStage,
    apply_op,
    augmentation_gallery,
    build_pipeline,
    list_pipelines,
    op_magnitude,
    policy_set,
)
from micronet_lib.augment.pil_ops import PilFastAAPipeline, pil_apply_op
from micronet_lib.data import CIFAR100_MEAN, CIFAR100_STD

MEAN, STD = CIFAR100_MEAN, CIFAR100_STD  # docs/method.md §2
# Sharpness may differ from PIL by one grey level (torchvision's float smoothing filter vs PIL's
# integer one). Every other op (geometric ones, Contrast, Color and AutoContrast included) matches
# PIL exactly.
PIL_TOL = {"Sharpness": 1}
SET_SIZES = {  # docs/method.md §5.2 / §7.4
    "fa_wresnet28x10_cifar100": 496,
    "fa_shake26_2x96d_cifar100": 498,
    "fa_wresnet40x2_cifar100": 500,
    "fa_wresnet40x2_cifar100_r5": 490,
}
CUTOUT_COUNTS = dict(zip(SET_SIZES, (158, 154, 152, 160)))  # docs/method.md §7.4
IDENTITY = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def policies():
    from micronet_lib import assets

    try:
        return {name: policy_set(name) for name in FASTAA_4X_ORDER}
    except assets.AssetUnavailableError as exc:
        from conftest import unavailable

        unavailable(str(exc))


def _smooth_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 6, 6, generator=g)
    up = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)[0]
    return (up * 255).round().to(torch.uint8)


def _pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def _real_images(root, n=6):
    files = sorted((root / "train").glob("*/*.jpg"))[:: max(1, len(sorted((root / "train").glob("*/*.jpg"))) // n)][:n]
    return [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).contiguous() for f in files]


# ---------------------------------------------------------------------------------------- policies


def test_policy_sets_sizes_and_op_counts(policies):
    for name, size in SET_SIZES.items():
        subs = policies[name]
        assert len(subs) == size
        counts = Counter(op for sub in subs for op, _p, _lvl in sub)
        assert counts["Cutout"] == CUTOUT_COUNTS[name]
        assert set(counts) <= set(OPS) and len(OPS) == 15
    assert policy_set("wresnet40x2_r5") == policies["fa_wresnet40x2_cifar100_r5"]
    with pytest.raises(ValueError, match="unknown FastAA policy set"):
        policy_set("wresnet99")


def test_magnitude_ranges():
    assert op_magnitude("Rotate", 0.0) == -30 and op_magnitude("Rotate", 1.0) == 30
    assert op_magnitude("Solarize", 1.0) == 256 and op_magnitude("Posterize", 0.0) == 4
    assert op_magnitude("Cutout", 1.0) == pytest.approx(0.2)
    assert op_magnitude("ShearX", 0.5) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown FastAA op"):
        op_magnitude("Blur", 0.5)


# ----------------------------------------------------------------------------- ops at extreme levels


def test_point_ops_at_extreme_levels():
    img = _smooth_image(1)
    assert torch.equal(apply_op(img, "Invert", 0.0), 255 - img)
    assert torch.equal(apply_op(img, "Posterize", op_magnitude("Posterize", 0.0)), img & 0xF0)  # 4 bits
    assert torch.equal(apply_op(img, "Posterize", op_magnitude("Posterize", 1.0)), img)  # 8 bits
    assert torch.equal(apply_op(img, "Solarize", op_magnitude("Solarize", 0.0)), 255 - img)  # all >= 0
    assert torch.equal(apply_op(img, "Solarize", op_magnitude("Solarize", 1.0)), img)  # none >= 256
    assert torch.equal(apply_op(img, "Solarize", 128), torch.where(img >= 128, 255 - img, img))
    assert torch.equal(apply_op(img, "Brightness", 0.1), (img.float() * 0.1).to(torch.uint8))
    ac = apply_op(img, "AutoContrast", 0.0)
    # stretched to the full range (the top level may truncate to 254 in float32, as in PIL)
    assert all(ac[c].min() == 0 and ac[c].max() >= 254 for c in range(3))
    grey = apply_op(img, "Color", 0.1).int()
    assert (grey.max(0).values - grey.min(0).values).float().mean() < 0.2 * (img.int().max(0).values - img.int().min(0).values).float().mean()
    low = apply_op(img, "Contrast", 0.1).float()
    assert low.std() < 0.15 * img.float().std()
    sharp = apply_op(img, "Sharpness", 1.9)
    assert torch.equal(sharp[:, 0], img[:, 0]) and torch.equal(sharp[:, :, -1], img[:, :, -1])  # borders kept


def _blob(row: int, col: int) -> torch.Tensor:
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[:, row - 1 : row + 2, col - 1 : col + 2] = 255
    return img


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    rows, cols = (img[0] > 0).nonzero(as_tuple=True)
    return rows.float().mean().item(), cols.float().mean().item()


@pytest.mark.parametrize("angle", [30.0, -30.0])
def test_rotate_extremes_move_a_blob_counter_clockwise(angle):
    out = apply_op(_blob(16, 26), "Rotate", angle)  # 10 px right of the centre (16, 16)
    r, c = _centroid(out)
    theta = np.radians(angle)
    # counter-clockwise on screen (rows grow downwards): up and to the left for +30°
    assert r == pytest.approx(16 - 10 * np.sin(theta), abs=1.0)
    assert c == pytest.approx(16 + 10 * np.cos(theta), abs=1.0)


def test_shear_and_translate_extremes():
    line = torch.zeros(3, 32, 32, dtype=torch.uint8)
    line[:, :, 20] = 255
    out = apply_op(line, "ShearX", 0.3)  # output (x, y) samples input (x + 0.3·y, y)
    for y in (0, 10, 30):
        cols = (out[0, y] > 0).nonzero().flatten().tolist()
        assert cols and abs(cols[0] - (20 - 0.3 * y)) <= 1
    img = _smooth_image(2)
    moved = apply_op(img, "TranslateX", 0.45)  # 14.4 px: content moves left, right edge black
    assert torch.equal(moved[:, :, :17], img[:, :, 14:31]) or torch.equal(moved[:, :, :17], img[:, :, 15:32])
    assert (moved[:, :, -14:] == 0).all()
    moved = apply_op(img, "TranslateY", -0.45)
    assert (moved[:, :14] == 0).all()


def test_cutout_extremes():
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    assert torch.equal(apply_op(img, "Cutout", 0.0, centre=(16.0, 16.0)), img)  # v = 0: no-op
    out = apply_op(img, "Cutout", op_magnitude("Cutout", 1.0), centre=(16.0, 16.0))  # L = 6.4
    box = (out != 0).any(0)
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert rows.tolist() == list(range(12, 19)) and cols.tolist() == list(range(12, 19))  # 12 … int(18.4), inclusive
    assert out[:, 15, 15].tolist() == list(CUTOUT_FILL)


def _same_as_pil(img: torch.Tensor, name: str, v: float, centre=(13.7, 21.2)) -> None:
    ours = apply_op(img, name, v, centre=centre)
    ref = _tensor(pil_apply_op(_pil(img), name, v, centre=centre))
    diff = (ours.int() - ref.int()).abs().max().item()
    assert diff <= PIL_TOL.get(name, 0), f"{name} v={v}: max |Δ| = {diff} vs PIL"


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_matches_pil_on_synthetic_images(name):
    for seed in (0, 1):
        img = _smooth_image(seed)
        for level in (0.0, 0.37, 1.0):
            v = op_magnitude(name, level)
            for sign in (1, -1) if OPS[name].signed else (1,):
                _same_as_pil(img, name, sign * v)


def test_ops_match_pil_on_real_images(cifar10_jpeg):
    for img in _real_images(cifar10_jpeg):
        for name in OPS:
            for level in (0.0, 0.8, 1.0):
                v = op_magnitude(name, level)
                _same_as_pil(img, name, -v if OPS[name].signed else v)


# ---------------------------------------------------------------------------------------- pipelines


def _batch(n=16, seed=0):
    return torch.stack([_smooth_image(seed + i) for i in range(n)])


def test_pipeline_names_and_errors():
    assert set(list_pipelines()) >= {"test", "baseline", "cutout", "autoaugment", "randaugment", "trivialaugment", "augmix", "fastaa", "fastaa4x"}
    with pytest.raises(ValueError, match="unknown pipeline"):
        build_pipeline("mixmatch", mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="randaugment"):
        build_pipeline("randaugment:two", mean=MEAN, std=STD)
    pipe = build_pipeline("baseline", mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="uint8"):
        pipe(torch.rand(2, 3, 32, 32), generator=torch.Generator())
    with pytest.raises(ValueError, match="copy=1"):
        pipe(_batch(2), copy=1, generator=torch.Generator())


def test_test_pipeline_is_normalisation_only():
    x = _batch(4)
    out = build_pipeline("test", mean=MEAN, std=STD)(x, generator=torch.Generator())
    expected = (x.float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-6)


def test_baseline_is_a_padded_crop_with_optional_flip():
    x = _batch(24)
    out = build_pipeline("baseline", mean=IDENTITY[0], std=IDENTITY[1])(x, generator=torch.Generator().manual_seed(3))
    out = (out * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), value=128)
    offsets, flips = set(), 0
    for i in range(len(x)):
        match = [(t, l, f) for t in range(9) for l in range(9) for f in (0, 1)
                 if torch.equal(out[i], padded[i, :, t:t + 32, l:l + 32].flip(-1) if f else padded[i, :, t:t + 32, l:l + 32])]
        assert match, f"image {i} is not a crop/flip of the 128-padded input"
        offsets.add(match[0][:2])
        flips += match[0][2]
    assert len(offsets) > 5 and 0 < flips < len(x)


def test_pipelines_are_seeded_and_shaped():
    x = _batch(8)
    for name in list_pipelines() + ["randaugment:1:5", "fastaa:wresnet40x2"]:
        pipe = build_pipeline(name, mean=MEAN, std=STD)
        for copy in range(pipe.copies_per_epoch):
            a = pipe(x, copy=copy, generator=torch.Generator().manual_seed(7))
            b = pipe(x, copy=copy, generator=torch.Generator().manual_seed(7))
            assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
            assert torch.equal(a, b), f"{name} copy {copy} is not reproducible"
    pipe = build_pipeline("fastaa4x", mean=MEAN, std=STD)
    assert pipe.copies_per_epoch == 4
    assert [stage.name for stage, *_ in pipe.copies] == list(FASTAA_4X_ORDER)
    assert build_pipeline("fastaa", mean=MEAN, std=STD).copies_per_epoch == 1


def test_torchvision_stages_leave_global_rng_alone():
    state = torch.get_rng_state()
    build_pipeline("trivialaugment", mean=MEAN, std=STD)(_batch(4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_cutout_pipeline_zeroes_before_normalise():
    x = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    out = build_pipeline("cutout", mean=IDENTITY[0], std=IDENTITY[1])(x, generator=torch.Generator().manual_seed(0))
    holes = (out == 0).all(1).sum(dim=(1, 2))
    assert (holes > 0).all() and (holes <= 256).all()


def test_fastaa_stage_probabilities():
    x = _batch(200)
    always = FastAAStage([(("Invert", 1.0, 0.3), ("Invert", 0.0, 0.3))])
    assert torch.equal(always(x, torch.Generator().manual_seed(0)), 255 - x)
    half = FastAAStage([(("Invert", 0.5, 0.3), ("Posterize", 0.0, 0.0))])
    changed = (half(x, torch.Generator().manual_seed(0)) != x).flatten(1).any(1).float().mean().item()
    assert 0.38 < changed < 0.62  # binomial(200, 0.5): ±3.4σ


def test_pil_reference_pipeline_runs(policies):
    pipe = PilFastAAPipeline([policies[s] for s in FASTAA_4X_ORDER], mean=MEAN, std=STD)
    out = pipe(_batch(8), copy=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32


def test_gallery_grid():
    fig = augmentation_gallery(_batch(6), ["baseline", "fastaa4x"], n=4, seed=1)
    assert len(fig.axes) == 3 * 4
    assert [fig.axes[r * 4].get_ylabel() for r in range(3)] == ["original", "baseline", "fastaa4x"]
    named = augmentation_gallery(_batch(6), ["baseline", "fastaa4x"], n=4, seed=1, labels=["crop + flip", "released"])
    assert [named.axes[r * 4].get_ylabel() for r in range(1, 3)] == ["crop + flip", "released"]
    with pytest.raises(ValueError, match="one label per pipeline"):
        augmentation_gallery(_batch(6), ["baseline", "fastaa4x"], n=4, labels=["only one"])
    with pytest.raises(ValueError, match="n=9"):
        augmentation_gallery(_batch(6), ["baseline"], n=9)


def test_bench_cli_json(capsys):
    from micronet_lib.cli import main

    rc = main(["bench", "augment", "--json", "--n", "32", "--batch", "16", "--pipelines", "baseline,fastaa4x"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"baseline", "fastaa4x", "pil:baseline", "pil:fastaa4x"}
    assert all(v > 0 for v in result.values())


# ---------------------------------------------------------------------------------------- docs/method.md §7.3 fidelity


def test_pil_exact_ops_on_noise_and_flat_channels():
    g = torch.Generator().manual_seed(3)
    noise = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
    narrow = torch.randint(90, 140, (3, 32, 32), generator=g, dtype=torch.uint8)
    flat = narrow.clone()
    flat[1] = 77  # one constant channel: PIL's autocontrast leaves it as is
    for img in (noise, narrow, flat):
        for name, v in (("Contrast", 0.1), ("Contrast", 1.9), ("Contrast", 1.234), ("Color", 0.1), ("Color", 1.9),
                        ("Color", 0.777), ("AutoContrast", 0.0)):
            _same_as_pil(img, name, v)
    assert torch.equal(apply_op(flat, "AutoContrast", 0.0)[1], flat[1])


def _cutout_centres(monkeypatch, rule: str, n: int) -> torch.Tensor:
    from micronet_lib.augment import fastaa

    seen = []

    def spy(img, name, v, *, centre=None, cached=True):
        seen.append(centre)
        return img

    monkeypatch.setattr(fastaa, "apply_op", spy)
    stage = FastAAStage([(("Cutout", 1.0, 1.0), ("Cutout", 1.0, 1.0))], cutout_centre=rule)
    stage(torch.zeros(n, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
    return torch.tensor(seen)


def test_cutout_centre_follows_the_authors_numpy_call(monkeypatch):
    # np.random.uniform(32) = uniform(low=32, high=1.0): each coordinate on (1, 32] (docs/method.md §7.3).
    c = _cutout_centres(monkeypatch, "authors", 10000)  # 20,000 (cx, cy) pairs
    assert c.shape == (20000, 2)
    assert c.min() > 1.0 and c.max() <= 32.0
    assert abs(c.mean().item() - 16.5) < 0.25  # mean of U(1, 32]; s.e. 8.95/√40000 ≈ 0.045
    counts = torch.histc(c.flatten(), bins=31, min=1.0, max=32.0)  # 31 unit bins, 1290 expected each
    assert counts.min() > 1100 and counts.max() < 1480  # ±5σ
    # A 6.4-px box (level 1, v = 0.2) touches column 0 when int(cx − 3.2) = 0, i.e. cx < 4.2:
    # 3.2/31 = 0.103 for the authors, 4.2/32 = 0.131 for a centre on [0, 32).
    touch = (c[:, 0] < 4.2).float().mean().item()
    assert abs(touch - 3.2 / 31) < 0.01  # s.e. 0.003
    u = _cutout_centres(monkeypatch, "uniform", 10000)
    assert u.min() >= 0.0 and u.max() < 32.0 and u.min() < 0.1
    assert abs((u[:, 0] < 4.2).float().mean().item() - 4.2 / 32) < 0.01


def test_cutout_boxes_touch_the_border_as_often_as_the_authors():
    # End to end through apply_op: how often the filled box starts at column 0 (level 1, L = 6.4 px).
    stage = FastAAStage([(("Cutout", 1.0, 1.0), ("Invert", 0.0, 0.0))])
    out = stage(torch.zeros(8000, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(1))
    filled = (out != 0).any(1)  # [N, H, W]
    assert filled.flatten(1).any(1).all()
    first_col = filled.any(1).float().argmax(1)
    touch = (first_col == 0).float().mean().item()
    assert abs(touch - 3.2 / 31) < 0.012  # s.e. 0.0034; the [0, 32) centre gives 0.131
    with pytest.raises(ValueError, match="cutout_centre"):
        FastAAStage([(("Cutout", 1.0, 1.0), ("Invert", 0.0, 0.0))], cutout_centre="centre")
