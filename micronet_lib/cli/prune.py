"""``micronet prune``: the authors' iterative schedule through the training engine, or one-shot pruning.

Schedule (docs/method.md §8.3–8.4)::

    micronet prune --from micronet_v2_pr_15 --max-rate 60 [--min-rate 15] [--cycles 3] --profile cpu [--set key=value]

One-shot (issue #7)::

    micronet prune --from micronet_v2_pr_15 --rate 30 --one-shot --out pr30.t7 [--recalibrate-bn --data cifar10]
"""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("prune", help="global magnitude pruning: iterative schedule (training) or one-shot")
    p.add_argument("--from", dest="source", required=True, help="released name (micronet_v2_pr_15) or checkpoint path")
    p.add_argument("--one-shot", action=argparse.BooleanOptionalAction, default=False, help="prune once, no training")
    p.add_argument("--rate", type=float, help="one-shot: percentage of prunable weights removed, in [0, 100)")
    p.add_argument("--out", help="one-shot: checkpoint to write (authors' layout, .mask buffers; atomic)")
    p.add_argument("--recalibrate-bn", action=argparse.BooleanOptionalAction, default=False,
                   help="one-shot: re-estimate BN statistics on training images of --data")
    p.add_argument("--data", help="one-shot: dataset spec for --recalibrate-bn (cifar100, cifar10, imagefolder:<path>, synthetic)")
    p.add_argument("--recalibrate-images", type=int, default=2560, help="training images for --recalibrate-bn")
    p.add_argument("--max-rate", type=float, help="schedule: final rate in %% (authors: 60)")
    p.add_argument("--min-rate", type=float, default=0.0, help="schedule: start rate in %% (default 0)")
    p.add_argument("--cycles", type=int, help="schedule: number of cycles K (default: the profile's cycles; authors 4)")
    p.add_argument("--profile", help="schedule: training profile (TrainConfig.from_profile)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="schedule: TrainConfig override, repeatable")
    p.add_argument("--scope", choices=("global", "layer"), default="global", help="magnitude ranking scope (authors: global)")
    p.add_argument("--ties", choices=("exact", "threshold"),
                   help="exact (default): remove exactly the scheduled count; threshold: numpy percentile, keep |w| > t "
                        "(schedule mode: TrainConfig.prune_ties)")
    p.add_argument("--arch", help="registered model name when it cannot be inferred from the checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action=argparse.BooleanOptionalAction, default=False, help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.one_shot:
        return _one_shot(args)
    return _schedule(args)


def _one_shot(args) -> int:
    from micronet_lib.cli import check_numbers, check_out_path, resolve_device
    from micronet_lib.pruning import PruneConfig, group_table, oneshot_prune, save_pruned, sparsity_summary

    unused = [flag for flag, v in (("--max-rate", args.max_rate), ("--cycles", args.cycles), ("--profile", args.profile)) if v is not None]
    if unused or args.overrides:
        raise ValueError(f"{', '.join(unused + ['--set'] * bool(args.overrides))} belong to the schedule mode; drop them or --one-shot")
    if args.rate is None or args.out is None:
        raise ValueError("--one-shot needs --rate R (percent in [0, 100)) and --out PATH")
    check_out_path(args.out)
    check_numbers(recalibrate_images=args.recalibrate_images)
    ties = args.ties or "exact"
    PruneConfig(rate_percent=args.rate, scope=args.scope, ties=ties)  # validate before loading anything
    dataset = None
    if args.recalibrate_bn:
        if not args.data:
            raise ValueError("--recalibrate-bn needs --data SPEC (training images for the BN statistics)")
        from micronet_lib.data import load_dataset

        dataset = load_dataset(args.data)
    elif args.data:
        raise ValueError("--data is only used with --recalibrate-bn")
    model = oneshot_prune(
        args.source, args.rate, scope=args.scope, ties=ties, arch=args.arch, recalibrate=dataset,
        recalibrate_images=args.recalibrate_images, device=resolve_device(args.device) if dataset is not None else "cpu",
    )
    summary = sparsity_summary(model)
    meta = dict(source=str(args.source), rate_percent=args.rate, scope=args.scope, ties=ties,
                recalibrate_bn=dataset.description if dataset is not None else None,
                recalibrate_images=args.recalibrate_images if dataset is not None else 0,
                sparsity=summary["sparsity"], nnz=summary["nnz"], numel=summary["numel"])
    path = save_pruned(model, args.out, meta=meta)
    if args.json:
        print(json.dumps(dict(meta, out=str(path), groups=summary["groups"]), indent=2))
    else:
        print(f"wrote {path}: global sparsity {summary['sparsity']:.6f} ({summary['nnz']} of {summary['numel']} weights kept)")
        print(group_table(model).to_string(float_format=lambda x: f"{x:.6f}"))
    return 0


def _schedule(args) -> int:
    from micronet_lib.cli import resolve_device
    from micronet_lib.pruning import PruneSchedule

    unused = [flag for flag, v in (("--rate", args.rate), ("--out", args.out), ("--data", args.data)) if v is not None]
    if args.recalibrate_bn:
        unused.append("--recalibrate-bn")
    if unused:
        raise ValueError(f"{', '.join(unused)} belong to --one-shot; add --one-shot or drop them")
    if args.max_rate is None or not args.profile:
        raise ValueError("the pruning schedule needs --max-rate M and --profile P (or use --one-shot --rate R --out PATH)")
    # Rates and cycles are checked before the training engine is imported or any data is loaded.
    PruneSchedule(min_rate=args.min_rate, max_rate=args.max_rate, cycles=args.cycles if args.cycles is not None else 1)
    from micronet_lib.train import TrainConfig, parse_overrides, run_or_load

    # The overrides and the schedule make one config: pruning-only fields (prune_ties) need prune_rates.
    overrides = parse_overrides(args.overrides)
    cycles = args.cycles if args.cycles is not None else overrides.get("cycles", TrainConfig.from_profile(args.profile).cycles)
    schedule = PruneSchedule(min_rate=args.min_rate, max_rate=args.max_rate, cycles=cycles)
    changes = dict(init_from=str(args.source), prune_rates=tuple(schedule.rates), cycles=cycles, prune_scope=args.scope)
    if args.ties is not None:  # else the profile's / --set prune_ties value stands
        changes["prune_ties"] = args.ties
    if args.arch:
        changes["model"] = args.arch
    config = TrainConfig.from_profile(args.profile, **{**overrides, **changes})
    if args.device != "auto" or config.device == "auto":
        config = config.replace(device=resolve_device(args.device))
    summary = run_or_load(config)
    result = {k: summary[k] for k in summary.keys()} if hasattr(summary, "keys") else dict(summary)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"pruning run {', '.join(f'{r:g}' for r in schedule.rates)} % done")
        for key, value in result.items():
            if key != "config":
                print(f"  {key}: {value}")
    return 0
