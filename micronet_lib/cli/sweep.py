"""``micronet sweep --profile P [--study 02|03|04|all] [--executor inprocess|ray[:ADDRESS]]``: train the grid."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "add_executor_options", "executor_from_args", "runs_dir_from_args"]


def add_executor_options(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    """``--executor``, ``--cpus-per-run``, ``--max-retries`` (shared with ``micronet reproduce``)."""
    parser.add_argument("--executor", default=default, metavar="inprocess|ray[:ADDRESS]",
                        help="where the training runs execute: in this process, one after the other (inprocess), or as "
                        "Ray tasks: 'ray' (a local cluster or $RAY_ADDRESS), 'ray:auto' (the cluster of `ray start` here), "
                        "'ray:HOST:PORT' (see docs/cluster.md)")
    parser.add_argument("--cpus-per-run", type=int, default=1, metavar="N",
                        help="ray: CPUs (and torch threads) per run when the cluster has no GPU (default 1); with GPUs each run takes one")
    parser.add_argument("--max-retries", type=int, default=3, metavar="N",
                        help="ray: times a run is retried when its worker dies (default 3); a run's own error is never retried")


def runs_dir_from_args(args: argparse.Namespace, params) -> Path:
    """The run store of ``--profile``/``--results``/``--publish`` (shared with ``micronet search-augment``);
    ``--publish`` first passes the guard of ``reproduce --publish``: a committed set is made by one commit."""
    from micronet_lib.pipeline import pipeline_runs_dir

    if args.publish:
        from micronet_lib.report import results_sets as sets

        target = sets.results_set(args.profile, params["data"], publish=True, base=args.results)
        sets.check_publish(target, profile=args.profile, data=params["data"], rebuild=False, identity=sets.code_identity())
    return pipeline_runs_dir(args.profile, params["data"], results_dir=args.results, publish=args.publish)


def executor_from_args(args: argparse.Namespace):
    from micronet_lib.experiments.sweeps import make_executor

    return None if args.executor is None else make_executor(
        args.executor, cpus_per_run=args.cpus_per_run, max_retries=args.max_retries)


def register(subparsers) -> None:
    from micronet_lib.pipeline import PROFILES

    p = subparsers.add_parser(
        "sweep",
        help="train the grid of notebooks 02-04 (in process or on a Ray cluster) without rendering them",
        description=("Build the TrainConfig of every run of the chosen studies under notebooks/params/<profile>.yaml, "
                     "exactly as the notebooks do, and train the unfinished ones; finished runs are read back. "
                     "`micronet reproduce` afterwards renders the notebooks from these runs without training."),
    )
    p.add_argument("--profile", choices=PROFILES, required=True, help="budget profile")
    p.add_argument("--study", default="all", metavar="02|03|04|all", help="which study's grid (comma list allowed; default all)")
    p.add_argument("--data", metavar="SPEC", help="dataset override, as for `micronet reproduce`")
    p.add_argument("--results", metavar="DIR", help="folder holding the results sets (default: results/); the runs go "
                   "to the runs/ of the set `micronet reproduce` renders (or to $MICRONET_RUNS when set)")
    p.add_argument("--publish", action="store_true",
                   help="train into the committed set results/<profile>-<data>/ (as `reproduce --publish`), not the scratch set")
    add_executor_options(p, default="inprocess")
    p.add_argument("--dry-run", action="store_true", help="list the first round of runs and their state, train nothing")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="the overall tqdm bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from micronet_lib.experiments.sweeps import finished_summary, sweep
    from micronet_lib.experiments.studies import parse_studies, study_configs
    from micronet_lib.pipeline import notebook_params

    studies = parse_studies(args.study)
    params = notebook_params(args.profile, data=args.data)
    runs_dir = runs_dir_from_args(args, params)
    if args.dry_run:
        for s in studies:
            for c in study_configs(s, params):
                state = "finished" if finished_summary(c, runs_dir) else "to run"
                print(f"{s} {c.config_hash()} {state}")
        return 0
    executor = executor_from_args(args)
    print(f"sweep: profile {args.profile}, studies {', '.join(studies)}, runs in {runs_dir}, executor {executor.name}")
    report = sweep(studies, params, executor=executor, runs_dir=runs_dir, progress=args.progress, echo=print)
    print(f"sweep done: {len(report.summaries)} run(s) finished ({report.loaded} read back, {report.ran} run now), "
          f"{len(report.failures)} failed")
    for key, message in report.failures.items():
        print(f"failed: {key}: {message}")
    return 1 if report.failures else 0
