"""Real images: MicroNet ver2 learns CIFAR-10 (JPEG stand-in) on a CPU budget (issue #6 acceptance)."""

from __future__ import annotations

import pytest

from micronet_lib.train import TrainConfig, fit

# Measured for the issue: ver2, 4 epochs on a stratified 5,000-image subset, BN statistics re-estimated
# on 2,560 training images → ~44 % top-1 (chance 10 %). Measured with this test on the 2-core CI machine
# (seed 0): NCHW 39.6 % test top-1 at the selected epoch, 39.7 % at the last, 532 s of training;
# channels-last 40.0 % / 40.5 %, 404 s. With the cpu profile's "auto" mode (as below; issue #13) the
# calibration picked bf16 autocast on the avx512_bf16 EPYC: 41.1 % / 41.1 % (1 thread, shared machine
# at load 4-11, 646 s of run time) -- within the noise of 1,000 test images (binomial s.e. ≈ 1.6 points).
# Re-measured on 6b5a128 (idle machine, 2 threads): auto (bf16) 40.0 % / 40.9 % vs fp32 channels-last
# 39.3 % / 41.2 % for seeds 0 / 1 (docs/performance.md).
# The test trains half of that subset (250 per class, 2,500 images, 4 epochs) to keep the suite short: in
# the cpu profile's named mode (bf16 + channels-last, 2 threads, idle EPYC VM, 2026-12-07) it reached
# 34.4 % / 34.6 % (seed 0) and 34.0 % / 34.0 % (seed 1) at the selected / last epoch, in 38-63 s.
# The floor leaves room for seeds and CPU kernels (3 times chance).
FLOOR_TOP1 = 30.0


@pytest.mark.slow
@pytest.mark.realdata
def test_ver2_learns_real_cifar10_subset_on_cpu(cifar10_jpeg, tmp_path):
    config = TrainConfig.from_profile(
        "cpu", dataset=f"imagefolder:{cifar10_jpeg}", train_per_class=250, val_per_class=50, test_per_class=100,
        epochs_per_cycle=4, bn_recalibrate_images=2560,  # the measured setup above, half the training images
    )  # the cpu profile names its execution mode (issue #28: no stopwatch decides a published number)
    assert config.model == "micronet_v2" and config.epochs_per_cycle * config.cycles == 4
    summary = fit(config, tmp_path, progress=False)
    assert summary["status"] == "finished"
    assert summary["execution"]["train"]["source"] == "config"  # the named mode, recorded as such
    # 1,000 test images (100 per class); the selected (validation-best) epoch's test accuracy.
    assert summary["best_test_top1"] >= FLOOR_TOP1, summary
    assert summary["final_test_top1"] >= FLOOR_TOP1, summary
