"""``micronet sparsity CHECKPOINT [--json] [--nested-in OUTER]``: sparsity per group and per layer (docs/method.md §4.5)."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser("sparsity", help="global / per-group / per-layer sparsity of a checkpoint")
    p.add_argument("checkpoint", help="released name (micronet_v2_pr_60) or checkpoint path")
    p.add_argument("--json", action=argparse.BooleanOptionalAction, default=False, help="print JSON")
    p.add_argument("--layers", action=argparse.BooleanOptionalAction, default=True, help="include the per-layer table")
    p.add_argument("--nested-in", dest="outer", help="also count weights kept here but pruned in this (denser) checkpoint")
    p.add_argument("--check", choices=("strict", "pruned", "none"), default="pruned",
                   help="mask/zero consistency required (strict: mask == (weight != 0))")
    p.set_defaults(func=run)


def run(args) -> int:
    from micronet_lib.pruning import check_masks, group_table, nesting_violations, read_state_dict, sparsity_summary, sparsity_table

    state = read_state_dict(args.checkpoint)
    check_masks(state, check=args.check, where=str(args.checkpoint))
    summary = sparsity_summary(state)
    if args.outer:
        summary["nested_in"] = {"outer": args.outer, "violations": nesting_violations(read_state_dict(args.outer), state)}
    if not args.layers:
        summary.pop("layers")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.checkpoint}: global sparsity {summary['sparsity']:.6f} over {summary['numel']} weights with ndim > 1 "
          f"({summary['nnz']} nonzero)")
    print(group_table(state).to_string(float_format=lambda x: f"{x:.6f}"))
    if args.layers:
        print()
        print(sparsity_table(state).to_string(index=False, float_format=lambda x: f"{x:.6f}"))
    if args.outer:
        print(f"nesting in {args.outer}: {summary['nested_in']['violations']} violations")
    return 0
