"""MicroNet Challenge scorer (docs/scoring.md): exact, traced, explained layer by layer.

``count(model, input_size=(1, 3, 32, 32), *, convention="kaist"|"official", freebie=True, param_bits=,
act_bits=, accumulator_bits=, bias=, exit_rates=, extra_params=, ...)`` returns a :class:`ScoreReport`
(``.table`` per op, ``.summary`` totals and score, ``.accounting()`` what is omitted or declared free).
Every op and parameter is counted, declared free with a reason, or an error naming the call that makes
it count. ``ops`` holds the official library's per-op formulas (docs/scoring.md §3); ``conventions`` the
two counting conventions (§5); ``trace`` the graph capture; ``attention`` matmul/softmax/attention from
shapes; ``widths`` the bit-width maps and adder trees; ``layouts`` fixed op layouts such as WRN-28-10's (§7.2).
"""

from micronet_lib.scoring import ops
from micronet_lib.scoring.conventions import Convention, Cost, get_convention, list_conventions, register_convention
from micronet_lib.scoring.report import (
    OPS_NORMALIZER,
    PARAMS_NORMALIZER,
    WRN28_10_OPS,
    WRN28_10_PARAMS,
    ScoreReport,
    bits_from_model,
    count,
    measure_exit_rates,
    list_layouts,
    register_layout,
    score,
    score_records,
)
from micronet_lib.scoring.records import DataDependentError, OpRecord, UnsupportedOpError, register_module, register_op_cost
from micronet_lib.scoring.trace import trace

__all__ = [
    "count",
    "score",
    "score_records",
    "ScoreReport",
    "trace",
    "OpRecord",
    "UnsupportedOpError",
    "DataDependentError",
    "register_op_cost",
    "register_module",
    "bits_from_model",
    "measure_exit_rates",
    "Convention",
    "Cost",
    "register_convention",
    "get_convention",
    "list_conventions",
    "register_layout",
    "list_layouts",
    "ops",
    "PARAMS_NORMALIZER",
    "OPS_NORMALIZER",
    "WRN28_10_PARAMS",
    "WRN28_10_OPS",
]
