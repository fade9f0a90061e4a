"""``micronet search-augment --profile P [--folds K] [--trials B] [--executor inprocess|ray[:ADDRESS]] …``:
Fast AutoAugment's density-matching search (docs/method.md §7.6), resumable in an Optuna storage."""

from __future__ import annotations

import argparse

from micronet_lib.cli.sweep import add_executor_options, executor_from_args, runs_dir_from_args

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search-augment",
        help="search a Fast-AutoAugment policy (density matching, TPE) and save it as a policy file",
        description=("Train one model per fold without policy (ordinary runs in the run store), then search policies "
                     "that, applied to the fold's held-out images, maximise the fixed model's accuracy (Optuna TPE, "
                     "evaluation only); the best policies of every fold are merged into policy-<sha>.json, usable as "
                     "the augmentation 'fastaa:<that file>'. Killed searches resume where they stopped."),
    )
    # the profile is checked by the library (one `error:` line), not by argparse choices (a usage block)
    p.add_argument("--profile", required=True, metavar="smoke|cpu|paper", help="budget profile (search settings: "
                   "micronet_lib/experiments/augment_search.py SEARCH_PROFILES; data and model: notebooks/params)")
    p.add_argument("--folds", type=int, metavar="K", help="stratified D_M / D_A splits, each with its own model (>= 2)")
    p.add_argument("--trials", type=int, metavar="B", help="TPE trials per fold and round (>= 1)")
    p.add_argument("--rounds", type=int, metavar="T", help="independent searches per fold (the paper: 2)")
    p.add_argument("--top", type=int, metavar="N", help="best policies kept per fold and round (the paper: 10)")
    p.add_argument("--ops", metavar="OP,OP,…", help="restrict the operations searched (default: all 15 of docs/method.md §7.3)")
    p.add_argument("--objective", choices=("accuracy", "loss"), help="accuracy (the authors') or cross-entropy")
    p.add_argument("--seed", type=int, metavar="S", help="seeds the fold splits, fold models, draws and TPE (default 0)")
    p.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the Optuna storage (default: sqlite file "
                   "search.db in the search folder); share one URL to share the studies between machines")
    p.add_argument("--data", metavar="SPEC", help="dataset override, as for `micronet reproduce`")
    p.add_argument("--results", metavar="DIR", help="folder holding the results sets (default: results/); the search "
                   "lives in the runs/ of the set `micronet reproduce` renders (or in $MICRONET_RUNS when set)")
    p.add_argument("--publish", action="store_true", help="search in the runs/ of the committed set results/<profile>-<data>/ "
                   "(as `micronet sweep --publish`), so `micronet reproduce --publish` renders notebook 03 from it")
    add_executor_options(p, default="inprocess")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=False,
                   help="if a reproduce, a sweep or another search is writing the same results set, wait for it "
                   "(default: stop with an error naming it)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bars (trials, best value)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from micronet_lib.experiments.augment_search import check_search_inputs, search_augment, search_settings
    from micronet_lib.pipeline import notebook_params
    from micronet_lib.report import results_sets as sets
    from micronet_lib.report.set_writers import set_lock, storage_errors

    ops = None if args.ops is None else tuple(o.strip() for o in args.ops.split(",") if o.strip())
    # every check before any data is read or any model trained
    settings = search_settings(args.profile, folds=args.folds, trials=args.trials, rounds=args.rounds, top=args.top,
                               ops=ops, objective=args.objective, seed=args.seed)
    if args.storage is not None:
        check_search_inputs(settings, args.storage)
    params = notebook_params(args.profile, data=args.data)
    executor = executor_from_args(args)
    runs_dir = runs_dir_from_args(args, params)
    target = sets.results_set(args.profile, params["data"], publish=args.publish, base=args.results)
    # The search's fold models are runs of the set: it is held as `sweep` holds it (one writer at a time).
    try:
        with set_lock(target, wait=args.wait), storage_errors(target):
            result = search_augment(params, settings, executor=executor, storage=args.storage, runs_dir=runs_dir,
                                    progress=args.progress, echo=print)
    finally:
        if hasattr(executor, "close"):
            executor.close()
    print(f"policy: {result.policy_path} ({len(result.policy)} sub-policies); train with it as "
          f"`micronet train --profile {args.profile} --set augment=fastaa:{result.policy_path}`")
    return 0
