"""The headless notebook pipeline behind ``micronet reproduce`` (issue #2, issue #8).

``reproduce(profile)`` runs ``notebooks/NN_*.ipynb`` in order with papermill (kernel ``python3``,
parameters from ``notebooks/params/<profile>.yaml``, working directory ``notebooks/``) into a results
set (``micronet_lib.report.results_sets``: the git-ignored ``results/scratch/<profile>-<data>/`` by default,
the committed ``results/<profile>-<data>/`` with ``publish=True``). Each executed notebook goes to the
set's ``executed/`` and an HTML report with the inputs hidden to its ``html/``; the set is built in a
staging folder and swapped in whole, so a failing notebook (the error names it and shows the failing
cell) or a kill leaves the previous set as it was.

Papermill only *warns* about parameters a notebook does not declare, so every notebook calls
``check_params`` right after its ``parameters`` cell; ``reproduce`` validates the profile the same
way before starting any notebook. The parameter schema (``PARAMS``) is shared by all notebooks.

Modules, one job each: ``params`` (the schema and its checks), ``notebooks`` (finding and selecting
notebooks), ``datasets`` (checking a run's data up front), ``execute`` (papermill, HTML, the results
set). 00_setup's report tables are ``micronet_lib.report.setup_tables``'s.
"""

from __future__ import annotations

from .datasets import resolve_data
from .run_notebooks import KERNEL, NotebookError, NotebookRun, _quiet_kernel_manager, notebook_params, pipeline_runs_dir, reproduce  # noqa: F401
from micronet_lib.repo import list_notebooks, notebooks_dir, select_notebooks
from .params import (PARAMS, PROFILES, Param, check_params, load_profile, notebook_parameter_names,
                     parameter_cell_names, user_namespace)

__all__ = [
    "PROFILES",
    "Param",
    "PARAMS",
    "NotebookError",
    "NotebookRun",
    "notebooks_dir",
    "list_notebooks",
    "select_notebooks",
    "load_profile",
    "notebook_params",
    "pipeline_runs_dir",
    "check_params",
    "user_namespace",
    "parameter_cell_names",
    "notebook_parameter_names",
    "resolve_data",
    "reproduce",
]
