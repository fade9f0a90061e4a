"""``micronet eval``: accuracy of a checkpoint (or an untrained model, for plumbing) on a dataset."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="top-1/top-5/loss of a checkpoint on a dataset",
        description="Evaluate a released checkpoint name, a checkpoint file, or (with --model only) an untrained model.",
    )
    p.add_argument("--checkpoint", metavar="NAME_OR_PATH", help="released name (e.g. micronet_v2_pr_60) or checkpoint file")
    p.add_argument("--model", metavar="NAME", help="architecture (build_model name); alone: an untrained model")
    p.add_argument("--num-classes", type=int, metavar="N", help="class count (default: the checkpoint's or the dataset's)")
    p.add_argument("--data", required=True, metavar="SPEC", help="cifar100 | cifar10 | imagefolder:PATH | synthetic")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--limit", type=int, metavar="N", help="evaluate a fixed random subset of N images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="fp32 (default) | bf16 autocast | auto: the fastest mode this machine runs (calibrated, cached)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--fuse-activations", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: run each conv + hard-swish as one oneDNN op (default; same function up to rounding)")
    p.add_argument("--allow-tf32", action=argparse.BooleanOptionalAction, default=False,
                   help="let CUDA run fp32 matmul/conv in TF32 (default: true fp32, as the authors)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of an untrained --model")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from micronet_lib.cli import check_numbers, resolve_device
    from micronet_lib.data import load_dataset
    from micronet_lib.evaluate import evaluate
    from micronet_lib.models import build_model, load_checkpoint, model_builder

    if args.checkpoint is None and args.model is None:
        raise ValueError("give --checkpoint NAME_OR_PATH, or --model NAME for an untrained model")
    check_numbers(batch_size=args.batch_size, limit=args.limit, num_classes=args.num_classes)  # before any decoding
    device = resolve_device(args.device)
    if args.model is not None:
        model_builder(args.model)  # unknown name → error listing the known ones, before any loading
    model = None
    if args.checkpoint is not None:
        # Checkpoints are small: load (and validate) before the possibly slow dataset decode.
        model = load_checkpoint(args.checkpoint, num_classes=args.num_classes, model=args.model)
    dataset = load_dataset(args.data)
    if model is None:
        torch.manual_seed(args.seed)
        model = build_model(args.model, num_classes=args.num_classes or dataset.num_classes)
    result = evaluate(model, dataset, args.split, batch_size=args.batch_size, device=device, precision=args.precision,
                      channels_last=args.channels_last, limit=args.limit, progress=args.progress, allow_tf32=args.allow_tf32,
                      fuse_activations=args.fuse_activations)
    source = args.checkpoint or f"{args.model} (untrained, seed {args.seed})"
    if args.json:
        out = {"checkpoint": args.checkpoint, "model": args.model, "data": dataset.name,
               "description": dataset.description, "device": device, "channels_last": args.channels_last,
               "allow_tf32": args.allow_tf32,
               **result.to_dict(), "classes": list(dataset.classes)}
        print(json.dumps(out, indent=2))
        return 0
    rows = [("model", source), ("data", f"{dataset.description} [{dataset.name}]"), ("split", f"{args.split} (n={result.n})"),
            ("top-1 %", f"{result.top1:.2f} ({result.correct}/{result.n})"), ("top-5 %", f"{result.top5:.2f}"),
            ("loss", f"{result.loss:.4f}"), ("precision", f"{result.precision}{', TF32 allowed' if args.allow_tf32 else ''}, {result.memory_format}{', BN folded' if result.bn_folded else ''}"
                          f"{f', {result.activations_fused} conv+hardswish fused' if result.activations_fused else ''} on {device}"
                          f" [{result.mode_source}]")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if dataset.num_classes <= 20:
        print("\nper-class top-1 %")
        cw = max(len(c) for c in dataset.classes)
        for cls, acc in zip(dataset.classes, result.per_class):
            print(f"  {cls:<{cw}}  {'n/a' if acc != acc else f'{acc:6.2f}'}")
    return 0
