"""Asset layer: sha256 verification, mirror lookup, offline errors, policy parsing (docs/method.md §4.1, §7)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter

import pytest

from micronet_lib import assets

CHECKPOINTS = ["micronet_v1_pr_60.t7", "micronet_v2_pr_15.t7", "micronet_v2_pr_30.t7",
               "micronet_v2_pr_45.t7", "micronet_v2_pr_60.t7"]
# docs/method.md §4.1: file sizes of the released checkpoints.
CHECKPOINT_BYTES = {"micronet_v1_pr_60.t7": 3_803_111} | {n: 3_965_799 for n in CHECKPOINTS[1:]}
# docs/method.md §7.4: sub-policies per set, and a few per-op counts (Cutout and Invert rows).
POLICY_SIZES = {"fa_wresnet28x10_cifar100": 496, "fa_shake26_2x96d_cifar100": 498,
                "fa_wresnet40x2_cifar100": 500, "fa_wresnet40x2_cifar100_r5": 490}
CUTOUT = {"fa_wresnet28x10_cifar100": 158, "fa_shake26_2x96d_cifar100": 154,
          "fa_wresnet40x2_cifar100": 152, "fa_wresnet40x2_cifar100_r5": 160}
INVERT = {"fa_wresnet28x10_cifar100": 14, "fa_shake26_2x96d_cifar100": 55,
          "fa_wresnet40x2_cifar100": 28, "fa_wresnet40x2_cifar100_r5": 44}

DEAD_URL = "http://127.0.0.1:9/"  # discard port: refused at once, never touches the network


def _isolate(tmp_path, monkeypatch):
    """No mirrors, an empty cache, and a dead upstream: nothing outside tmp_path is reachable."""
    monkeypatch.delenv("MICRONET_ASSETS", raising=False)
    monkeypatch.delenv("MICRONET_OFFLINE", raising=False)
    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "UPSTREAM_BASE", DEAD_URL)
    monkeypatch.setattr(assets, "_network_down_until", 0.0)
    assets._verified.clear()
    return tmp_path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    return _isolate(tmp_path, monkeypatch)


def _fake_registry(monkeypatch, name: str, payload: bytes) -> str:
    """Register a small asset whose sha256 is that of ``payload`` (so tests need no real checkpoint)."""
    digest = hashlib.sha256(payload).hexdigest()
    entry = assets.Asset(name, digest, f"Fake/{name}")
    monkeypatch.setitem(assets._REGISTRY, name, entry)
    return digest


def test_registry_matches_paper():
    assert set(CHECKPOINTS) | {"cifar100_fast_aug.json", "cifar100_fast_aug.py"} == set(assets.list_assets())
    assert assets.asset_sha256("micronet_v1_pr_60.t7") == "8f78e1d6fceea4163af444f923702c9d8de9c66135e19921aab72512d4d602b5"
    assert assets.asset_url("micronet_v2_pr_45.t7") == (
        "https://raw.githubusercontent.com/Kthyeon/micronet_neurips_challenge/"
        "fb41bbb2fd0f238ec775930cba8eb4b429606a98/Checkpoint_ver2/micronet_v2_pr_45.t7")
    # The JSON is derived: its URL is that of the upstream .py it comes from.
    assert assets.asset_url("cifar100_fast_aug.json").endswith("/Utils/cifar100_fast_aug.py")
    with pytest.raises(KeyError, match="micronet_v1_pr_60.t7"):
        assets.fetch("micronet_v3.t7")


def test_mirror_lookup_both_layouts_and_order(isolated, monkeypatch):
    payload = b"checkpoint bytes"
    _fake_registry(monkeypatch, "fake.t7", payload)
    flat, nested, bogus = isolated / "flat", isolated / "nested", isolated / "bogus"
    flat.mkdir(); (nested / "kaist").mkdir(parents=True); bogus.mkdir()
    (flat / "fake.t7").write_bytes(payload)
    (nested / "kaist" / "fake.t7").write_bytes(payload)
    monkeypatch.setenv("MICRONET_ASSETS", f"{isolated / 'missing'}:{nested}:{flat}")
    assert assets.fetch("fake.t7") == nested / "kaist" / "fake.t7"
    monkeypatch.setenv("MICRONET_ASSETS", f"{flat}:{nested}")
    assert assets.fetch("fake.t7") == flat / "fake.t7"
    # A bogus copy in the first mirror is an error, not skipped in favour of a later good one.
    (bogus / "fake.t7").write_bytes(b"tampered")
    monkeypatch.setenv("MICRONET_ASSETS", f"{bogus}:{flat}")
    with pytest.raises(assets.AssetChecksumError) as err:
        assets.fetch("fake.t7")
    msg = str(err.value)
    assert "fake.t7" in msg and hashlib.sha256(payload).hexdigest() in msg and hashlib.sha256(b"tampered").hexdigest() in msg


def test_cache_is_verified_too(isolated, monkeypatch):
    payload = b"cached"
    _fake_registry(monkeypatch, "fake.t7", payload)
    cache = isolated / "cache"
    cache.mkdir()
    (cache / "fake.t7").write_bytes(payload)
    assert assets.fetch("fake.t7") == cache / "fake.t7"
    (cache / "fake.t7").write_bytes(b"corrupted after caching")
    with pytest.raises(assets.AssetChecksumError, match="expected sha256"):
        assets.fetch("fake.t7")


def test_offline_error_names_asset_url_and_variable(isolated):
    with pytest.raises(assets.AssetUnavailableError) as err:
        assets.fetch("micronet_v2_pr_60.t7")
    msg = str(err.value)
    assert "micronet_v2_pr_60.t7" in msg and DEAD_URL + "Checkpoint_ver2/micronet_v2_pr_60.t7" in msg
    assert "MICRONET_ASSETS" in msg
    assert not (isolated / "cache" / "micronet_v2_pr_60.t7").exists()  # no partial file left behind


def test_failed_download_makes_later_fetches_fail_fast(isolated, monkeypatch):
    import pooch

    calls = []

    class HangingDownloader:
        def __init__(self, **kwargs):
            pass

        def __call__(self, url, output_file, pooch_obj, check_only=False):
            import requests

            calls.append(url)
            raise requests.exceptions.ConnectTimeout(f"timed out connecting to {url}")

    monkeypatch.setattr(pooch, "HTTPDownloader", HangingDownloader)
    with pytest.raises(assets.AssetUnavailableError, match="ConnectTimeout"):
        assets.fetch("micronet_v2_pr_15.t7")
    with pytest.raises(assets.AssetUnavailableError, match="an earlier download in this process failed"):
        assets.fetch("micronet_v2_pr_30.t7")
    assert len(calls) == 1
    monkeypatch.setattr(assets, "_network_down_until", 0.0)  # after NETWORK_RETRY_AFTER_S: tried again
    with pytest.raises(assets.AssetUnavailableError, match="ConnectTimeout"):
        assets.fetch("micronet_v2_pr_30.t7")
    assert len(calls) == 2


def test_offline_flag_fails_without_network(isolated, monkeypatch):
    monkeypatch.setenv("MICRONET_OFFLINE", "1")
    monkeypatch.setattr(assets, "_download", lambda entry: pytest.fail("must not try to download"))
    with pytest.raises(assets.AssetUnavailableError, match="MICRONET_OFFLINE"):
        assets.fetch("micronet_v1_pr_60.t7")


def test_download_goes_through_pooch_with_hash_check(isolated, monkeypatch):
    """A stand-in for pooch's downloader writes the bytes: good bytes land in the cache, bad ones error."""
    import pooch

    payload = b"downloaded"
    _fake_registry(monkeypatch, "fake.t7", payload)
    served = {"bytes": payload}

    class FakeDownloader:
        def __init__(self, **kwargs):
            assert kwargs["timeout"] == assets.DOWNLOAD_TIMEOUT_S

        def __call__(self, url, output_file, pooch_obj, check_only=False):
            assert url == DEAD_URL + "Fake/fake.t7"
            with open(output_file, "wb") as f:
                f.write(served["bytes"])

    monkeypatch.setattr(pooch, "HTTPDownloader", FakeDownloader)
    path = assets.fetch("fake.t7")
    assert path == isolated / "cache" / "fake.t7" and path.read_bytes() == payload
    path.unlink()
    served["bytes"] = b"evil"
    with pytest.raises(assets.AssetChecksumError, match="fake.t7"):
        assets.fetch("fake.t7")
    assert not (isolated / "cache" / "fake.t7").exists()


@pytest.mark.assets
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_real_checkpoints_verify(asset, name):
    path = asset(name)
    assert path.stat().st_size == CHECKPOINT_BYTES[name]
    assert path.read_bytes()[:2] == b"\x80\x02"  # docs/method.md §4.2: legacy pickle protocol 2


@pytest.mark.assets
def test_real_mirror_copy_with_one_flipped_byte_is_rejected(asset, tmp_path, monkeypatch):
    good = asset("micronet_v1_pr_60.t7")
    isolated = _isolate(tmp_path, monkeypatch)
    mirror = isolated / "mirror"
    mirror.mkdir()
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    (mirror / good.name).write_bytes(bytes(data))
    monkeypatch.setenv("MICRONET_ASSETS", str(mirror))
    with pytest.raises(assets.AssetChecksumError, match=assets.asset_sha256(good.name)):
        assets.fetch(good.name)


@pytest.mark.assets
def test_policies_counts_from_paper(asset):
    asset("cifar100_fast_aug.json")  # skip (locally) / fail (CI) when the mirror is absent
    policies = assets.load_policies()
    assert {k: len(v) for k, v in policies.items()} == POLICY_SIZES
    for name, subs in policies.items():
        ops = Counter(op[0] for sub in subs for op in sub)
        assert sum(ops.values()) == 2 * POLICY_SIZES[name]
        assert ops["Cutout"] == CUTOUT[name] and ops["Invert"] == INVERT[name]
        assert len(ops) == 15  # docs/method.md §7.3: 15 ops used
        assert all(len(sub) == 2 and all(0 <= p <= 1 and 0 <= lv <= 1 for _, p, lv in sub) for sub in subs)


UPSTREAM_SHAPE = '''\
import random


def fa_small_a():
    p = [[["Cutout", 0.5, 0.25], ["Invert", 1.0, 0.0]],
         [["Posterize", 0.1, 0.9], ["Rotate", 0.2, 0.3]]]
    return p


def fa_small_b():
    p = [[["Color", 0.75, 0.5], ["Sharpness", 0.25, 1.0]]]
    return p
'''


def test_policy_source_parsed_as_data_not_executed(tmp_path):
    src = UPSTREAM_SHAPE + "\nraise SystemExit('executed!')\n"
    path = tmp_path / "policies.py"
    path.write_text(src)
    parsed = assets.parse_policy_source(path.read_text())
    assert parsed == {
        "fa_small_a": [(("Cutout", 0.5, 0.25), ("Invert", 1.0, 0.0)), (("Posterize", 0.1, 0.9), ("Rotate", 0.2, 0.3))],
        "fa_small_b": [(("Color", 0.75, 0.5), ("Sharpness", 0.25, 1.0))],
    }


@pytest.mark.parametrize("bad, match", [
    ('def f():\n    p = [[["Cutout", 0.5, 0.2]]]\n    return p\n', "exactly 2 ops"),
    ('def f():\n    p = [[["Cutout", 1.5, 0.2], ["Invert", 0.1, 0.1]]]\n    return p\n', r"p in \[0, 1\]"),
    ('def f():\n    p = [[["Cutout", 0.5, 0.2], [3, 0.1, 0.1]]]\n    return p\n', "name: str"),
    ('def f():\n    p = [[["Cutout", 0.5, __import__("os").getpid()], ["Invert", 0.1, 0.1]]]\n    return p\n', "not a pure literal"),
    ("x = 1\n", "no policy functions"),
])
def test_policy_source_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        assets.parse_policy_source(bad)


def test_load_policies_falls_back_to_upstream_py(isolated, monkeypatch):
    """Without the JSON, the verified .py is parsed; set sizes are checked against docs/method.md §7.4."""
    sets = {name: [[["Cutout", 0.5, 0.5], ["Invert", 0.5, 0.5]]] * n for name, n in POLICY_SIZES.items()}
    src = "\n\n".join(f"def {name}():\n    p = {json.dumps(value)}\n    return p\n" for name, value in sets.items())
    _fake_registry(monkeypatch, "cifar100_fast_aug.py", src.encode())
    mirror = isolated / "mirror"
    mirror.mkdir()
    (mirror / "cifar100_fast_aug.py").write_text(src)
    monkeypatch.setenv("MICRONET_ASSETS", str(mirror))
    assert {k: len(v) for k, v in assets.load_policies().items()} == POLICY_SIZES
    # One sub-policy short of the paper's count: refused.
    sets["fa_wresnet40x2_cifar100_r5"] = sets["fa_wresnet40x2_cifar100_r5"][:-1]
    src = "\n\n".join(f"def {name}():\n    p = {json.dumps(value)}\n    return p\n" for name, value in sets.items())
    _fake_registry(monkeypatch, "cifar100_fast_aug.py", src.encode())
    (mirror / "cifar100_fast_aug.py").write_text(src)
    with pytest.raises(ValueError, match="489 sub-policies, expected 490"):
        assets.load_policies()


@pytest.mark.assets
def test_policy_json_mirror_copy_must_verify(asset, tmp_path, monkeypatch):
    good = asset("cifar100_fast_aug.json")
    isolated = _isolate(tmp_path, monkeypatch)
    mirror = isolated / "mirror"
    mirror.mkdir()
    shutil.copyfile(good, mirror / good.name)
    monkeypatch.setenv("MICRONET_ASSETS", str(mirror))
    assert len(assets.load_policies()) == 4
    (mirror / good.name).write_text(json.dumps(json.loads(good.read_text()), indent=1))  # same data, other bytes
    with pytest.raises(assets.AssetChecksumError, match="70aa17f4c55b27c43308f9be600389af4f6bfcf33714383af51324f2cd7e3bc7"):
        assets.load_policies()
