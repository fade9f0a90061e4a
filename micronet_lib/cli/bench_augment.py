"""``micronet bench augment``: images/s of each input pipeline on ONE core, vs the authors' PIL path.

Every named pipeline runs on the same uint8 images, batch by batch, with ``torch.set_num_threads(1)``;
the PIL reference (:class:`~micronet_lib.augment.pil_ops.PilFastAAPipeline`, the authors' per-image
approach of docs/method.md §5.1) runs in the same process right after, on the same images: ``pil:baseline``
(crop + flip + ToTensor + Normalize) and ``pil:fastaa4x`` (FastAA, the four sets cycled). docs/method.md §10
times the steady state: FastAA's cached geometric index maps are built before the clock starts.
docs/method.md §10 puts the authors' FastAA pipeline at ≈ 5,800 img/s on one core, versus ≈ 125 img/s for training.
"""

from __future__ import annotations

import json
import time

__all__ = ["register", "run_bench"]

DEFAULT_PIPELINES = ("test", "baseline", "cutout", "fastaa", "fastaa4x", "autoaugment", "randaugment", "trivialaugment", "augmix")


def _images(n: int, data: str | None, seed: int):
    import torch

    if data:
        from micronet_lib.data import load_dataset

        train = load_dataset(data, seed=seed).train
        if len(train.images) < n:
            raise ValueError(f"--data {data} has {len(train.images)} training images, fewer than --n {n}")
        return train.images[:n].contiguous()
    # Smooth random images (not white noise), so histogram/contrast ops see realistic statistics.
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=gen)
    up = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return (up * 255).round().clamp(0, 255).to(torch.uint8)


def _rate(fn, images, batch: int, copies: int) -> float:
    import torch

    gen = torch.Generator().manual_seed(0)
    fn(images[:batch], copy=0, generator=gen)  # warm-up (caches, lazy imports)
    start = time.perf_counter()
    done = 0
    for i, lo in enumerate(range(0, len(images), batch)):
        chunk = images[lo : lo + batch]
        fn(chunk, copy=i % copies, generator=gen)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def run_bench(*, n: int = 2048, batch: int = 128, pipelines=DEFAULT_PIPELINES, data: str | None = None, pil: bool = True) -> dict[str, float]:
    """pipeline name → images/s on one thread (``pil:*`` entries: the PIL reference)."""
    import logging

    import torch

    from micronet_lib.augment import build_pipeline
    from micronet_lib.augment.fastaa import FASTAA_4X_ORDER, policy_set
    from micronet_lib.augment.pil_ops import PilFastAAPipeline
    from micronet_lib.data import CIFAR100_MEAN, CIFAR100_STD

    if n < 1 or batch < 1:
        raise ValueError(f"--n {n} and --batch {batch} must be >= 1")
    built = {name: build_pipeline(name, mean=CIFAR100_MEAN, std=CIFAR100_STD) for name in pipelines}  # fail fast on bad names
    torch.set_num_threads(1)
    images = _images(n, data, seed=0)
    log = logging.getLogger(__name__)
    results: dict[str, float] = {}
    for name, pipe in built.items():
        # Steady state, as in training: FastAA's geometric index maps are built once per (op, v) and
        # cached, so build them before timing (a few seconds at most for all four sets).
        for stages in pipe.copies:
            for stage in stages:
                if hasattr(stage, "warm"):
                    stage.warm(*images.shape[-2:])
        results[name] = _rate(pipe, images, batch, pipe.copies_per_epoch)
        log.info("%-16s %10.0f img/s", name, results[name])
    if pil:
        ref = PilFastAAPipeline([[]], mean=CIFAR100_MEAN, std=CIFAR100_STD, fastaa=False)
        results["pil:baseline"] = _rate(ref, images, batch, 1)
        ref = PilFastAAPipeline([policy_set(s) for s in FASTAA_4X_ORDER], mean=CIFAR100_MEAN, std=CIFAR100_STD)
        results["pil:fastaa4x"] = _rate(ref, images, batch, 4)
    return results


def _run(args) -> int:
    names = tuple(p for p in args.pipelines.split(",") if p) if args.pipelines else DEFAULT_PIPELINES
    results = run_bench(n=args.n, batch=args.batch, pipelines=names, data=args.data, pil=args.pil)
    if args.json:
        print(json.dumps({k: round(v, 1) for k, v in results.items()}, indent=2))
    else:
        print(f"augmentation throughput, 1 thread, n={args.n}, batch={args.batch}")
        for name, rate in results.items():
            print(f"  {name:<24s} {rate:>10.0f} img/s")
    return 0


def register(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser("augment", help="images/s of each augmentation pipeline on one core, vs PIL")
    parser.add_argument("--n", type=int, default=2048, help="images per pipeline (default 2048)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128, the authors')")
    parser.add_argument("--pipelines", default="", help=f"comma-separated names (default: {','.join(DEFAULT_PIPELINES)})")
    parser.add_argument("--data", default=None, help="dataset spec for real images (default: synthetic smooth images)")
    parser.add_argument("--pil", action=argparse.BooleanOptionalAction, default=True, help="also time the PIL reference")
    parser.add_argument("--json", action="store_true", help="print {pipeline: images/s} as JSON")
    parser.set_defaults(func=_run)
