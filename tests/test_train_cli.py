"""``micronet train`` and ``micronet bench train`` on tiny settings."""

from __future__ import annotations

import json

from micronet_lib.cli import main
from micronet_lib.train import read_summary

TINY = ["--set", "cycles=1", "--set", "epochs_per_cycle=1", "--set", "train_per_class=8", "--set", "val_per_class=2",
        "--set", "test_per_class=4", "--set", "bn_recalibrate_images=32"]


def test_train_then_resume_a_finished_run(tmp_path, capsys):
    assert main(["train", "--profile", "smoke", *TINY, "--runs-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "deviation: dataset='synthetic'" in out and "finished after 1/1 epochs" in out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert read_summary(run_dir)["status"] == "finished"
    mtime = (run_dir / "summary.json").stat().st_mtime_ns
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "summary.json").stat().st_mtime_ns == mtime  # nothing retrained


def test_dry_run_prints_config_and_run_folder(tmp_path, capsys):
    assert main(["train", "--profile", "cpu", "--set", "lr=0.05", "--runs-dir", str(tmp_path), "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lr"] == 0.05 and shown["run_dir"].startswith(str(tmp_path))
    assert any(d.startswith("lr=0.05") for d in shown["deviations"])


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert main(["train", "--profile", "smoke", "--set", "bogus=1"]) == 2
    assert "unknown TrainConfig key 'bogus'" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--set", "mix=cutout"]) == 2
    assert "'cutmix'" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_bench_train_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MICRONET_CACHE", str(tmp_path))
    from micronet_lib.accel import norm_kernel

    args = ["bench", "train", "--json", "--steps", "1", "--rounds", "1", "--warmup", "0", "--batch-size", "4",
            "--threads", "1", "--weights", "none", "--aten-bn"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ratio_vs_authors"]["authors"] == 1.0 and result["chosen"] in result["images_per_s"]
    assert {"fp32", "fp32+channels_last"} <= set(result["images_per_s"]) and all(v > 0 for v in result["images_per_s"].values())
    assert result["machine"]["allocator"]["applied"] is True and "avx512_bf16" in result["machine"]["flags"]
    # --aten-bn: each channels-last mode once more with ATen's BatchNorm and SE, where the kernels exist
    assert result["machine"]["norm_kernel"] == norm_kernel.status()
    aten = {name for name in result["images_per_s"] if name.endswith(" (ATen BN)")}
    assert aten == ({f"{n} (ATen BN)" for n in result["images_per_s"] if n.endswith("channels_last")}
                    if norm_kernel.available() else set())
    assert main(["bench", "train", "--steps", "0"]) == 2 and "--steps 0" in capsys.readouterr().err


def test_bench_compile_adds_a_compiled_variant_of_every_mode():
    """``--compile`` times each eager mode again under torch.compile (compiling itself is too slow to test here)."""
    import torch

    from micronet_lib.bench.measure import _modes

    eager = _modes(torch.device("cpu"), compile=False)
    both = _modes(torch.device("cpu"), compile=True)
    assert not any(m.compile for m in eager)
    assert [m.name for m in both] == [m.name for m in eager] + [m.name + "+compile" for m in eager]
