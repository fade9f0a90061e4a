"""Data layer: official CIFAR pickle layout, image folders + cache, synthetic set, subsets (docs/method.md §2)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from micronet_lib import data

# docs/method.md §2 normalisation constants and md5 of the official CIFAR-100 pickles.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
MD5_TRAIN = "16019d7e3df5f24257cddd939b257f8d"
MD5_META = "7973b15100ade9c7d40fb424638fde48"
STATS_TOL = 1e-5  # mean/std are stored rounded to 6 decimals


# The real-image test reuses the user's cache (decoding 60k JPEGs takes ~30 s); the others get a tmp one.
_USER_CACHE = os.environ.get("MICRONET_CACHE")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    for var in ("MICRONET_DATA", "MICRONET_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path / "cache"))


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- normalize

def test_normalize_formula_and_leading_dims():
    x = torch.randint(0, 256, (2, 5, 3, 4, 4), dtype=torch.uint8)
    out = data.normalize(x, CIFAR100_MEAN, CIFAR100_STD)
    assert out.dtype == torch.float32 and out.shape == x.shape
    c = 1
    expected = (x[1, 2, c].double() / 255 - CIFAR100_MEAN[c]) / CIFAR100_STD[c]
    torch.testing.assert_close(out[1, 2, c].double(), expected, atol=1e-5, rtol=0)
    assert x.dtype == torch.uint8  # input untouched
    with pytest.raises(ValueError, match="uint8"):
        data.normalize(x.float(), CIFAR100_MEAN, CIFAR100_STD)
    with pytest.raises(ValueError, match="3, H, W"):
        data.normalize(torch.zeros(2, 4, 4, 4, dtype=torch.uint8), CIFAR100_MEAN, CIFAR100_STD)


# ------------------------------------------------------------------------------------ official pickles

def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are protocol-2 pickles


def _cifar100_tree(root, n_train=12, n_test=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    split_data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arr = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [i % classes for i in range(n)]
        split_data[split] = (arr, fine)
        _dump(folder / split, {"filenames": [f"img{i}.png" for i in range(n)], "batch_label": split,
                               "fine_labels": fine, "coarse_labels": [0] * n, "data": arr})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(classes)], "coarse_label_names": ["c0"]})
    return folder, split_data


def test_cifar100_official_layout(tmp_path):
    folder, raw = _cifar100_tree(tmp_path)
    ds = data.load_dataset("cifar100", root=tmp_path, download=False)
    assert ds.description == "CIFAR-100" and ds.classes == ("fine0", "fine1", "fine2", "fine3")
    assert ds.mean == CIFAR100_MEAN and ds.std == CIFAR100_STD
    assert ds.train.images.shape == (12, 3, 32, 32) and ds.test.images.shape == (6, 3, 32, 32)
    arr, fine = raw["train"]
    # Rows are 1024 R values, then G, then B, each row-major 32x32.
    assert ds.train.images[5, 1, 2, 3].item() == arr[5, 1024 + 2 * 32 + 3]
    assert torch.equal(ds.train.images.reshape(12, -1), torch.from_numpy(arr))
    assert ds.train.labels.tolist() == fine and ds.train.labels.dtype == torch.int64
    # MICRONET_DATA is the default root; root= may also point at the pickle folder itself.
    os.environ["MICRONET_DATA"] = str(tmp_path)
    try:
        assert torch.equal(data.load_dataset("cifar100", download=False).test.images, ds.test.images)
    finally:
        del os.environ["MICRONET_DATA"]
    assert torch.equal(data.load_dataset("cifar100", root=folder, download=False).train.labels, ds.train.labels)


def test_cifar10_official_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    rng = np.random.default_rng(1)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        arr = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 3).tolist()
        batches.append((arr, labels))
        _dump(folder / name, {"batch_label": name, "labels": labels, "data": arr, "filenames": ["a", "b", "c"]})
    _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    ds = data.load_dataset("cifar10", root=tmp_path, download=False)
    assert len(ds.train) == 15 and len(ds.test) == 3 and ds.num_classes == 10
    assert ds.mean == data.CIFAR10_MEAN and ds.std == data.CIFAR10_STD
    assert ds.train.labels.tolist() == sum((b[1] for b in batches[:5]), [])  # batches 1..5 in order
    assert torch.equal(ds.test.images.reshape(3, -1), torch.from_numpy(batches[5][0]))


def test_md5_mismatch_names_file_and_expected(tmp_path, monkeypatch):
    folder, _ = _cifar100_tree(tmp_path)
    # Explicit verify=True: small test pickles are not the official files (meta is read first).
    with pytest.raises(ValueError) as err:
        data.load_dataset("cifar100", root=tmp_path, download=False, verify=True)
    assert str(folder / "meta") in str(err.value) and f"expected {MD5_META}" in str(err.value)
    # verify=None checks a file that holds the official number of images: pretend 12 is official.
    layout = dataclasses.replace(data._CIFAR["cifar100"], images_per_file={"train": 12, "test": 10000})
    monkeypatch.setitem(data._CIFAR, "cifar100", layout)
    with pytest.raises(ValueError) as err:
        data.load_dataset("cifar100", root=tmp_path, download=False)
    assert str(folder / "train") in str(err.value) and f"expected {MD5_TRAIN}" in str(err.value)
    assert len(data.load_dataset("cifar100", root=tmp_path, download=False, verify=False).train) == 12


def test_corrupt_pickle_names_file_and_expected_md5(tmp_path):
    folder, _ = _cifar100_tree(tmp_path)
    (folder / "meta").write_bytes((folder / "meta").read_bytes()[:20])  # truncated
    with pytest.raises(ValueError) as err:
        data.load_dataset("cifar100", root=tmp_path, download=False)
    assert str(folder / "meta") in str(err.value) and MD5_META in str(err.value)


def test_pickle_with_code_is_refused(tmp_path):
    folder, _ = _cifar100_tree(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.getpid, ())

    _dump(folder / "meta", {"fine_label_names": Evil()})
    with pytest.raises(ValueError, match="refusing to load"):
        data.load_dataset("cifar100", root=tmp_path, download=False)


def test_missing_folder_error_names_folder_and_variable(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("cifar100", root=tmp_path / "nowhere", download=False)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in str(err.value) and "MICRONET_DATA" in str(err.value)
    # Download allowed but the host is dead (never the real network in tests).
    layout = dataclasses.replace(data._CIFAR["cifar100"], archive="http://127.0.0.1:9/cifar-100-python.tar.gz")
    monkeypatch.setitem(data._CIFAR, "cifar100", layout)
    with pytest.raises(FileNotFoundError, match="MICRONET_DATA") as err:
        data.load_dataset("cifar100", root=tmp_path / "dl")
    assert "127.0.0.1:9" in str(err.value)
    assert not (tmp_path / "dl" / "cifar-100-python").exists()


def test_download_extracts_verified_archive(tmp_path, monkeypatch):
    import pooch

    src, raw = _cifar100_tree(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-100-python")
    archive = buf.getvalue()
    md5 = hashlib.md5(archive).hexdigest()
    layout = dataclasses.replace(data._CIFAR["cifar100"], archive="http://127.0.0.1:9/c100.tar.gz", archive_md5=md5)
    monkeypatch.setitem(data._CIFAR, "cifar100", layout)
    served = {"bytes": archive}

    class FakeDownloader:
        def __init__(self, **kwargs):
            assert kwargs["timeout"] == data.DOWNLOAD_TIMEOUT_S

        def __call__(self, url, output_file, pooch_obj, check_only=False):
            with open(output_file, "wb") as f:
                f.write(served["bytes"])

    monkeypatch.setattr(pooch, "HTTPDownloader", FakeDownloader)
    ds = data.load_dataset("cifar100", root=tmp_path / "dl")
    assert ds.train.labels.tolist() == raw["train"][1]
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["c100.tar.gz", "cifar-100-python"]
    # A tampered archive fails its md5 and leaves no extracted folder.
    served["bytes"] = archive[:-10] + b"0" * 10
    with pytest.raises(FileNotFoundError, match=md5):
        data.load_dataset("cifar100", root=tmp_path / "dl2")
    assert not (tmp_path / "dl2" / "cifar-100-python").exists()


# ---------------------------------------------------------------------------------------- image folder

def _image_tree(root, classes=("cat", "ant", "bee"), n_train=4, n_test=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i:04d}.png")  # lossless: exact pixels
                pixels[(split, cls, i)] = arr
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return pixels


def test_a_few_image_files_read_directly(tmp_path, monkeypatch):
    pixels = _image_tree(tmp_path / "shared" / "tree")
    monkeypatch.setenv("MICRONET_IMAGEFOLDER_ROOT", str(tmp_path / "shared"))
    monkeypatch.chdir(tmp_path)
    folder = data.resolve_image_folder("tree")  # not here: found under MICRONET_IMAGEFOLDER_ROOT
    assert folder == tmp_path / "shared" / "tree" and data.find_image_folder("nowhere") is None
    with pytest.raises(FileNotFoundError, match="nowhere not found .*MICRONET_IMAGEFOLDER_ROOT"):
        data.resolve_image_folder("nowhere")
    # ceil(5 / 3) = 2 per class (ant, bee, cat in name order), interleaved by rank; notes.txt is no image
    files = data.first_per_class(folder / "train", 5)
    assert [(f.parent.name, f.name) for f in files] == [("ant", "0000.png"), ("bee", "0000.png"), ("cat", "0000.png"),
                                                       ("ant", "0001.png"), ("bee", "0001.png")]
    images = data.read_images(files)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert np.array_equal(images[2].permute(1, 2, 0).numpy(), pixels[("train", "cat", 0)])
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="differ in size"):
        data.read_images([files[0], tmp_path / "small.png"])


def test_imagefolder_loads_exact_pixels_and_stats(tmp_path):
    pixels = _image_tree(tmp_path / "tree")
    ds = data.load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert ds.classes == ("ant", "bee", "cat") and ds.description == "image folder tree"
    assert len(ds.train) == 12 and len(ds.test) == 6
    assert ds.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(ds.train.images[4 + 2], torch.from_numpy(pixels[("train", "bee", 2)]).permute(2, 0, 1))
    all_train = np.stack([pixels[("train", c, i)] for c in ("ant", "bee", "cat") for i in range(4)]) / 255.0
    np.testing.assert_allclose(ds.mean, all_train.mean(axis=(0, 1, 2)), atol=STATS_TOL)
    np.testing.assert_allclose(ds.std, all_train.std(axis=(0, 1, 2)), atol=STATS_TOL)


def test_imagefolder_cache_reused_and_invalidated(tmp_path, monkeypatch):
    _image_tree(tmp_path / "tree")
    spec = f"imagefolder:{tmp_path / 'tree'}"
    first = data.load_dataset(spec)
    cached = list((tmp_path / "cache" / "imagefolder").glob("*.pt"))  # beside each: its <name>.pt.sha256.json
    assert len(cached) == 1 and (cached[0].parent / f"{cached[0].name}.sha256.json").is_file()

    real_decode = data.imagefolder.decode_image
    monkeypatch.setattr(data.imagefolder, "decode_image", lambda p: pytest.fail(f"cache not used: decoded {p}"))
    again = data.load_dataset(spec)
    assert torch.equal(again.train.images, first.train.images) and again.mean == first.mean
    # A damaged cache file is rebuilt, not trusted.
    monkeypatch.setattr(data.imagefolder, "decode_image", real_decode)
    cached[0].write_bytes(b"not a torch file")
    assert torch.equal(data.load_dataset(spec).train.images, first.train.images)
    # A new file changes the listing hash: the tree is decoded again into a second cache file.
    monkeypatch.setattr(data.imagefolder, "decode_image", real_decode)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tree" / "test" / "ant" / "9999.png")
    assert len(data.load_dataset(spec).test) == 7
    assert len(list((tmp_path / "cache" / "imagefolder").glob("*.pt"))) == 2


def test_imagefolder_corrupt_file_named_and_nothing_cached(tmp_path):
    _image_tree(tmp_path / "tree")
    bad = tmp_path / "tree" / "train" / "bee" / "0001.png"
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=str(bad)):
        data.load_dataset(f"imagefolder:{tmp_path / 'tree'}", workers=2)
    cache = tmp_path / "cache" / "imagefolder"
    assert not cache.exists() or not any(cache.iterdir())


def test_imagefolder_layout_errors_and_root_lookup(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        data.load_dataset(f"imagefolder:{tmp_path / 'absent'}")
    _image_tree(tmp_path / "odd")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "odd" / "test" / "cat" / "small.png")
    with pytest.raises(ValueError, match="small.png"):
        data.load_dataset(f"imagefolder:{tmp_path / 'odd'}")
    (tmp_path / "shared").mkdir()
    _image_tree(tmp_path / "shared" / "cifar10-jpeg", n_train=2, n_test=1)
    monkeypatch.setenv("MICRONET_IMAGEFOLDER_ROOT", str(tmp_path / "shared"))
    monkeypatch.chdir(tmp_path)
    ds = data.load_dataset("imagefolder:cifar10-jpeg")
    assert ds.description == "CIFAR-10 (JPEG) stand-in" and ds.name == "imagefolder:cifar10-jpeg"


@pytest.mark.slow
@pytest.mark.realdata
def test_real_cifar10_jpeg(cifar10_jpeg, monkeypatch):
    if _USER_CACHE is None:
        monkeypatch.delenv("MICRONET_CACHE")
    else:
        monkeypatch.setenv("MICRONET_CACHE", _USER_CACHE)
    ds = data.load_dataset(f"imagefolder:{cifar10_jpeg}")
    assert ds.description == "CIFAR-10 (JPEG) stand-in" and ds.num_classes == 10
    assert len(ds.train) == 50_000 and len(ds.test) == 10_000
    assert torch.bincount(ds.train.labels).tolist() == [5000] * 10
    # JPEG re-encoding shifts pixels slightly: stats stay near the official CIFAR-10 values.
    np.testing.assert_allclose(ds.mean, data.CIFAR10_MEAN, atol=0.01)
    np.testing.assert_allclose(ds.std, data.CIFAR10_STD, atol=0.01)


# ------------------------------------------------------------------------------------------- synthetic

def test_synthetic_deterministic_and_shaped():
    kw = dict(synthetic_classes=5, synthetic_train_per_class=8, synthetic_test_per_class=3)
    a, b = data.load_dataset("synthetic", seed=3, **kw), data.load_dataset("synthetic", seed=3, **kw)
    c = data.load_dataset("synthetic", seed=4, **kw)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.train.images.shape == (40, 3, 32, 32) and a.train.images.dtype == torch.uint8
    assert torch.bincount(a.train.labels).tolist() == [8] * 5 and a.description == "synthetic (smoke)"
    with pytest.raises(ValueError, match="synthetic_classes"):
        data.load_dataset("synthetic", synthetic_classes=1)


def test_synthetic_is_learnable():
    """Logistic regression on 4x4-pooled pixels, 200 SGD steps: far above the 10 % chance level."""
    torch.manual_seed(0)
    ds = data.load_dataset("synthetic", synthetic_train_per_class=100, synthetic_test_per_class=50)

    def feats(split):
        x = data.normalize(split.images, ds.mean, ds.std)
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    xtr, xte = feats(ds.train), feats(ds.test)
    lin = torch.nn.Linear(xtr.shape[1], ds.num_classes)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        i = torch.randint(0, len(xtr), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(lin(xtr[i]), ds.train.labels[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (lin(xte).argmax(1) == ds.test.labels).float().mean().item()
    chance = 1 / ds.num_classes
    assert acc > 4 * chance, f"test accuracy {acc:.3f} is not clearly above chance {chance:.2f}"


# ------------------------------------------------------------------------------------------- subsets

def _indexed_split(per_class=(7, 5, 9)):
    """Split whose image [i, 0, 0, 0] encodes i, so subsets can be traced back to source rows."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    images = torch.zeros(len(labels), 3, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels), dtype=torch.uint8)
    return data.Split(images, labels)


def test_stratified_subset_exact_deterministic_nested():
    split = _indexed_split()
    a = data.stratified_subset(split, 4, seed=1)
    assert torch.bincount(a.labels).tolist() == [4, 4, 4]
    ids = a.images[:, 0, 0, 0].long()
    assert torch.equal(split.labels[ids], a.labels) and torch.all(ids[1:] > ids[:-1])
    assert torch.equal(data.stratified_subset(split, 4, seed=1).images, a.images)
    assert not torch.equal(data.stratified_subset(split, 4, seed=2).images, a.images)
    small = set(data.stratified_subset(split, 2, seed=1).images[:, 0, 0, 0].tolist())
    assert small <= set(ids.tolist())
    with pytest.raises(ValueError, match="class 1 has 5 examples"):
        data.stratified_subset(split, 6, seed=0)
    with pytest.raises(ValueError, match="n_per_class"):
        data.stratified_subset(split, 0, seed=0)


def test_validation_carved_from_train_disjoint():
    split = _indexed_split()
    ds = data.Dataset("toy", "toy", ("a", "b", "c"), (0.5,) * 3, (0.25,) * 3, split, split)
    v = data.with_validation(ds, val_per_class=2, seed=0)
    tr, va = set(v.train.images[:, 0, 0, 0].tolist()), set(v.val.images[:, 0, 0, 0].tolist())
    assert not tr & va and len(tr | va) == len(split)
    assert torch.bincount(v.val.labels).tolist() == [2, 2, 2]
    assert v.split("val") is v.val and v.data_id == "toy:train15/val6/test21"
    with pytest.raises(ValueError, match="already has a val"):
        data.with_validation(v, val_per_class=1, seed=0)
    with pytest.raises(ValueError, match="no 'val' split"):
        ds.split("val")
    sub = data.subset(v, train_per_class=3, test_per_class=1, seed=5)
    assert torch.bincount(sub.train.labels).tolist() == [3, 3, 3] and len(sub.test) == 3 and sub.val is v.val


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown dataset spec 'cifar1000'"):
        data.load_dataset("cifar1000")
    with pytest.raises(ValueError, match="uint8"):
        data.Split(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        data.Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    s = data.Split(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        data.Dataset("toy", "toy", ("a", "b"), (0.5,) * 3, (0.25,) * 3, s, s)
    with pytest.raises(ValueError, match="Dataset.std"):
        data.Dataset("toy", "toy", ("a",) * 6, (0.5,) * 3, (0.0, 1.0, 1.0), s, s)


def test_cifar100_test_head_prefers_the_official_pickles(tmp_path):
    _, raw = _cifar100_tree(tmp_path, n_test=6)
    split, source = data.cifar100_test_head(4, samples=tmp_path / "no-samples", root=tmp_path)
    assert source == "CIFAR-100 test pickles" and len(split) == 4
    arr, fine = raw["test"]
    assert torch.equal(split.images, torch.from_numpy(arr[:4].reshape(-1, 3, 32, 32)))
    assert split.labels.tolist() == fine[:4]
    with pytest.raises(FileNotFoundError, match="sample folder"):  # no pickles and no samples: a clear error
        data.cifar100_test_head(4, samples=tmp_path / "no-samples", root=tmp_path / "empty")
