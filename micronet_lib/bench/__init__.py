"""``micronet bench``: this project's execution against an authors-style one, in one process.

- :mod:`.measure`: ``bench_train`` / ``bench_eval`` / ``bench_epoch``: ratios to the reference and the
  images/s behind them.
- :mod:`.authors_style`: the authors-style reference execution (written in this project).
- :mod:`.printout`: the machine line, chosen mode and ratio table the command prints.

The command line stays ``micronet_lib/cli/bench*.py`` (one file per target).
"""
