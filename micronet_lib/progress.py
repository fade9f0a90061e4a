"""Whether this process shows live progress: the one switch behind progress bars, time estimates and
explorers (issue #12).

Headless runs that save their outputs (``micronet reproduce``) set ``TQDM_DISABLE=1``: progress bars,
machine-dependent time estimates and widgets would only clutter the committed reports. Everywhere else
(JupyterLab, a terminal) progress is shown; ``tqdm.auto`` draws it as a widget in Lab and as text in a
terminal.
"""

from __future__ import annotations

import os

__all__ = ["bars_enabled", "interactive"]

_OFF = ("1", "true", "yes", "on")


def bars_enabled() -> bool:
    """False when ``$TQDM_DISABLE`` is set (headless runs that save their outputs), else True."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in _OFF


def interactive() -> bool:
    """True in a Jupyter kernel that a Jupyter server started for a notebook open in a frontend
    (JupyterLab sets ``$JPY_SESSION_NAME``), so widgets can be used; else False.

    A kernel run by nbclient or papermill without a frontend draws the static views instead: executing
    ``ipywidgets.interact`` there can block for good (jupyter/nbclient#312, nteract/papermill#723).
    """
    if not bars_enabled() or not os.environ.get("JPY_SESSION_NAME"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook dependencies
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
