"""``micronet train``: run a training profile, or resume a killed run (docs/method.md §5)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(subparsers) -> None:
    from micronet_lib.train.config import list_profiles

    parser = subparsers.add_parser(
        "train",
        help="train MicroNet with the authors' recipe (profile paper) or a reduced budget (cpu, smoke)",
        description="Train a profile (--profile) with key=value overrides (--set), or continue a run (--resume).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--profile", choices=list_profiles(), help="training profile")
    what.add_argument("--resume", metavar="RUN_DIR", help="continue the run stored in RUN_DIR")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one TrainConfig field, e.g. --set epochs_per_cycle=2 (repeatable)")
    parser.add_argument("--runs-dir", help="folder of run folders (default $MICRONET_RUNS or results/runs)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (overrides the profile)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bars")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and its run folder, train nothing")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=False,
                        help="if another process is training the same run, wait for it (default: stop with an error naming it)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-previous", action="store_true",
                       help="with --resume: continue from last.prev.pt (the checkpoint before a corrupt last.pt)")
    start.add_argument("--restart", action="store_true",
                       help="with --resume: delete the run's checkpoints, metrics and summary and train it again")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from micronet_lib.cli import resolve_device
    from micronet_lib.train import TrainConfig, fit, resume, run_dir_for

    start = "previous" if args.from_previous else "over" if args.restart else "last"
    if args.resume:
        if args.overrides or args.device:
            raise ValueError("--resume continues a run with its stored config; --set/--device cannot change it")
        summary = resume(args.resume, progress=args.progress, wait=args.wait, start=start)
    else:
        config = TrainConfig.from_profile(args.profile).with_overrides(args.overrides)
        if args.device:
            config = config.replace(device=resolve_device(args.device))
        run_dir = run_dir_for(config, args.runs_dir)
        if args.dry_run:
            print(json.dumps(dict(run_dir=str(run_dir), **config.to_dict(with_derived=True)), indent=2))
            return 0
        for line in config.deviations:
            print(f"deviation: {line}")
        if start != "last":
            raise ValueError("--from-previous and --restart apply to a stored run: use them with --resume RUN_DIR")
        summary = fit(config, run_dir, progress=args.progress, wait=args.wait)
    print(f"run {summary['run_dir']}: {summary['status']} after {summary['epochs']}/{summary['epochs_total']} epochs "
          f"in {summary['seconds']:.0f} s")
    best = ", ".join(f"{k} {summary[k]:.2f} %" for k in ("best_val_top1", "best_test_top1") if summary.get(k) is not None)
    print(f"selected cycle {summary['best_cycle']} epoch {summary['best_epoch']} ({summary['selection_note']}): {best}")
    return 0
