"""``micronet reproduce --profile smoke|cpu|paper [--only NN[,NN]] [--data SPEC] [--publish [--rebuild]]
[--executor ray[:ADDRESS]]``: run the notebooks headless into a results set (``micronet_lib.report.results_sets``);
with ``--executor``, train their grid with it first."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    from micronet_lib.pipeline import PROFILES

    p = subparsers.add_parser(
        "reproduce",
        help="run every notebook headless (papermill) and render HTML reports",
        description=(
            "Run notebooks/NN_*.ipynb in order with the parameters of notebooks/params/<profile>.yaml into a "
            "results set: results/scratch/<profile>-<data>/ (git-ignored) by default, the committed "
            "results/<profile>-<data>/ with --publish. A set holds tables/, figures/, html/ (inputs hidden), "
            "executed/, runs/ and manifest.json; it is built in a staging folder and swapped in whole."
        ),
    )
    p.add_argument("--profile", choices=PROFILES, default="smoke", help="budget profile (default: smoke)")
    p.add_argument("--only", metavar="NN", help="run only these notebooks, e.g. 00 or 01,05")
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="dataset override: synthetic, cifar100, cifar10 or imagefolder:PATH (PATH relative to here), "
        "e.g. imagefolder:../shared/data/cifar10-jpeg",
    )
    p.add_argument("--publish", action="store_true",
                   help="write the committed set results/<profile>-<data>/ instead of the scratch set; refused when "
                   "that set was made by other code, profile or data (see --rebuild) or the tree has uncommitted changes")
    p.add_argument("--rebuild", action="store_true",
                   help="build the set whole, from nothing (needed to replace a committed set made by another commit)")
    p.add_argument("--rerender", action="store_true",
                   help="render the reports of an existing set again from its stored run records, never training "
                   "(allowed for a committed set made by another commit; its manifest then names both commits)")
    p.add_argument("--index-only", action="store_true",
                   help="only regenerate the set's landing page (index.html, index.md, the manifest's verdicts) and, "
                   "for the set the README's claims table names, that table")
    p.add_argument("--results", metavar="DIR", help="folder holding the results sets (default: results/)")
    p.add_argument("--execution", metavar="MODE",
                   help="override the profile's execution mode, e.g. fp32+channels_last on a CPU without native bf16 "
                   "(sets $MICRONET_EXECUTION; the tables then differ from the committed set's by rounding)")
    from micronet_lib.cli.sweep import add_executor_options

    add_executor_options(p, default=None)  # given: train the grid first (`micronet sweep`), then render
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from micronet_lib.cli.sweep import executor_from_args
    from micronet_lib.pipeline import reproduce

    from micronet_lib.report.results_sets import relative_to_repo

    if args.execution:
        import os

        from micronet_lib.train.profiles import EXECUTION_ENV, parse_execution

        parse_execution(args.execution)  # a bad name: one line before any work
        os.environ[EXECUTION_ENV] = args.execution  # the notebook kernels inherit it

    runs = reproduce(args.profile, only=args.only, data=args.data, results_dir=args.results, publish=args.publish,
                     rebuild=args.rebuild, executor=executor_from_args(args), rerender=args.rerender,
                     index_only=args.index_only)
    if args.index_only:
        from micronet_lib.pipeline import notebook_params
        from micronet_lib.report.results_sets import results_set

        data = notebook_params(args.profile, data=args.data)["data"]
        folder = results_set(args.profile, data, publish=args.publish, base=args.results).folder
        print(f"landing page regenerated: {relative_to_repo(folder)}/index.html")
        return 0
    for run in runs:
        print(f"{run.name}: {run.seconds:.1f} s -> {relative_to_repo(run.html)}")
    print(f"{len(runs)} notebook(s) done, profile {args.profile}; total {sum(r.seconds for r in runs):.1f} s")
    return 0
