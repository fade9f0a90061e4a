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
    """True in a Jupyter kernel whose outputs are watched live (so widgets can be used), else False."""
    if not bars_enabled():
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook dependencies
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
