"""``micronet bench epoch``: whole epochs of ``fit`` (paper recipe, mode "auto") vs the authors-style pipeline."""

from __future__ import annotations

import os

__all__ = ["register"]


def _default_data() -> str | None:
    root = os.environ.get("MICRONET_IMAGEFOLDER_ROOT")
    return f"imagefolder:{os.path.join(root, 'cifar10-jpeg')}" if root else None


def register(targets) -> None:
    from micronet_lib.bench.printout import add_machine_options

    parser = targets.add_parser("epoch", help="images/s of whole fit epochs (FastAA 4x, CutMix, WLS, ortho) vs authors-style")
    parser.add_argument("--data", default=None,
                        help="dataset spec (default: imagefolder:$MICRONET_IMAGEFOLDER_ROOT/cifar10-jpeg)")
    parser.add_argument("--train-per-class", type=int, default=20, help="training images per class (default 20)")
    parser.add_argument("--test-per-class", type=int, default=10, help="test images per class (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="epochs per side, alternating (default 2; median)")
    parser.add_argument("--authors-workers", type=int, default=None,
                        help="DataLoader workers of the authors-style side (default: 4 on a GPU, as the authors; 0 on a CPU)")
    parser.add_argument("--capture-step", choices=("off", "graph", "compile"), default="off",
                        help="fit's training step: eager (off, default), one CUDA graph, or reduce-overhead compile")
    add_machine_options(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    import torch

    from micronet_lib.cli import resolve_device
    from micronet_lib.bench.printout import print_result
    from micronet_lib.bench.measure import bench_epoch

    data = args.data or _default_data()
    if not data:
        raise ValueError("--data is required (or set MICRONET_IMAGEFOLDER_ROOT to a folder holding cifar10-jpeg/)")
    for name in ("train_per_class", "test_per_class", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if args.authors_workers is not None and args.authors_workers < 0:
        raise ValueError(f"--authors-workers {args.authors_workers} must be >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench_epoch(data=data, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                         rounds=args.rounds, device=resolve_device(args.device), authors_workers=args.authors_workers,
                         capture_step=args.capture_step)
    print_result(result, title=f"fit epochs, paper recipe, {result['samples_per_epoch']} samples/epoch "
                               f"(FastAA 4x of {result['train_images']} images), eval mode {result['eval_mode']}, "
                               f"step capture {args.capture_step}",
                 as_json=args.json)
    return 0
