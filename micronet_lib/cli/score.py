"""``micronet score``: MicroNet Challenge score of a checkpoint, a registered model or any importable model
(``--model-factory module:function [--weights file]``), with an entry's declared widths (``--bits-file``)."""

from __future__ import annotations

import argparse
import json
import time

__all__ = ["register", "run"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="MicroNet Challenge params/ops/score of a model (docs/scoring.md)",
        description="Count parameter storage and math ops under the challenge rules and print the score.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="NAME_OR_PATH",
                     help="released name (e.g. micronet_v1_pr_60) or a checkpoint file")
    src.add_argument("--model", metavar="NAME", help="a registered model, freshly initialised (e.g. micronet_v2)")
    src.add_argument("--model-factory", metavar="MODULE:FUNCTION",
                     help="any importable model: MODULE:FUNCTION() returns an nn.Module (e.g. mypkg.nets:build)")
    parser.add_argument("--weights", metavar="FILE", help="state dict for --model-factory (loaded strictly)")
    parser.add_argument("--bits-file", metavar="YAML",
                        help="declared widths and options: param_bits, act_bits, accumulator_bits, bias_bits "
                             "(int, {glob: bits} or 'model'), bias, exit_rates (see docs/scoring.md)")
    parser.add_argument("--bias", default=None, help="bias policy: folded (default), present or own")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier width (default: the model's); with --model-factory it is passed as "
                             "FUNCTION(num_classes=N), and a factory without that keyword is refused")
    parser.add_argument("--convention", default="kaist", help="kaist (authors' count, default) or official")
    parser.add_argument("--freebie", action=argparse.BooleanOptionalAction, default=True,
                        help="16-bit freebie: params and mults at half cost (default on)")
    parser.add_argument("--layout", default=None, help="fixed op layout instead of tracing, e.g. wrn_standard")
    parser.add_argument("--input-size", type=int, nargs=4, default=(1, 3, 32, 32), metavar=("N", "C", "H", "W"))
    parser.add_argument("--per-layer", action="store_true", help="print the per-layer table")
    parser.add_argument("--json", action="store_true", help="print the summary (and table with --per-layer) as JSON")
    parser.set_defaults(func=run)


def _load(args):
    from micronet_lib.models import build_model

    if args.model_factory:
        from micronet_lib.scoring.sources import model_from_factory

        return (model_from_factory(args.model_factory, weights=args.weights, num_classes=args.num_classes),
                args.model_factory)
    if args.weights:
        raise ValueError("--weights goes with --model-factory; a --checkpoint carries its own weights")
    if args.model:
        options = {} if args.num_classes is None else {"num_classes": args.num_classes}
        return build_model(args.model, **options).eval(), args.model
    from micronet_lib.models.checkpoints import load_checkpoint

    return load_checkpoint(args.checkpoint, num_classes=args.num_classes), args.checkpoint


def run(args) -> int:
    from micronet_lib.scoring import count, get_convention

    get_convention(args.convention)  # bad names fail before any loading
    options = {}
    if args.bits_file:
        from micronet_lib.scoring.sources import read_options_file

        options = read_options_file(args.bits_file)
    if args.bias is not None:
        options["bias"] = args.bias
    if any(s < 1 for s in args.input_size):
        raise ValueError(f"--input-size {' '.join(map(str, args.input_size))}: every size must be positive")
    model, source = _load(args)
    start = time.perf_counter()
    report = count(model, tuple(args.input_size), convention=args.convention, freebie=args.freebie, layout=args.layout,
                   **options)
    seconds = time.perf_counter() - start
    summary = dict(report.summary, source=source, count_seconds=round(seconds, 4))
    if args.json:
        out = {"summary": {k: (list(v) if isinstance(v, tuple) else v) for k, v in summary.items()}}
        if args.per_layer:
            out["table"] = json.loads(report.table.to_json(orient="records"))
        print(json.dumps(out, indent=2))
        return 0
    if args.per_layer:
        cols = ["path", "op", "out_shape", "params", "nonzeros", "mask_bits", "mults", "adds", "param_bits", "act_bits",
                "add_bits", "note"]
        print(report.table[cols].to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
        print()
    s = summary
    print(f"source      {source}  (convention {s['convention']}, freebie {'on' if s['freebie'] else 'off'}, "
          f"layout {s['layout']})")
    print(f"params      {s['params']:,.2f} values + {s['mask_bits']:,} mask bits -> params_s {s['params_s']:,.2f}")
    print(f"ops         {s['adds']:,.2f} adds + {s['mults']:,.2f} mults -> ops_s {s['ops_s']:,.2f}")
    print(f"score       {s['score']:.7f}  = {s['params_term']:.7f} (params) + {s['ops_term']:.7f} (ops)")
    print(f"accounting  {report.accounting()}")
    if s.get("freebie_forfeited"):
        print(f"freebie     off: {s['freebie_forfeited']}")
    print(f"counted in  {seconds:.3f} s")
    return 0
