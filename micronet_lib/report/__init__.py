"""Everything a report needs: tables and figures, results sets, claims and verdicts, run records.

- :mod:`.results`: ``publish`` / ``note`` / ``announce``: atomic, byte-stable tables and figures.
- :mod:`.formatting`: one formatter for tables and figures shown to a reader.
- :mod:`.results_sets`: one folder per (profile, data), its manifest, clobber guard and staging swap.
- :mod:`.set_writers`: one lock per results set; a full or read-only disk as one line.
- :mod:`.claims`: the paper's claims a report tests and the boxes that state them.
- :mod:`.stats`: intervals and verdicts.
- :mod:`.run_records`: what a report needs from a run's checkpoint, kept in the run's committed record.
- :mod:`.power`: the power analysis of a paired design (a unit of its own below the experiments, docs/layout.md).
- :mod:`.outcomes`: per-image test outcomes (kept by :mod:`micronet_lib.train.outcomes`).
- :mod:`.setup_tables`: the tables of ``00_setup``.
- :mod:`.explore`: small ipywidgets explorers.
- :mod:`.notebook`: the notebooks' common first step (``prologue``) and shared helpers (``released_models``).
- :mod:`.index`: a results set's landing page (every claim, verdict, effect; is the set current?) and the
  README's claims table generated from it.
- :mod:`.figures`: the figures that can mislead, built so tests can check them; ``figure_problems``.
- :mod:`.prose`: report text generated from what ran (03's plan).

Submodules are imported by name (``from micronet_lib.report import results``): this package imports
nothing itself, so ``results`` stays free of torch.
"""
