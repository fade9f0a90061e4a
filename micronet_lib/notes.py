"""A visible note in the running notebook, logged everywhere else.

A base module (docs/layout.md) so that any layer can leave a note for the reader — a missing data set, a
learning curve that could not be read back — without importing the report package above it.
"""

from __future__ import annotations

import logging

__all__ = ["note"]

log = logging.getLogger("micronet_lib.report.results")


def note(text: str) -> None:
    """A visible note in the running notebook (a missing data set or asset, a caveat); logged elsewhere.

    Issue #8: where data or an asset is missing, the notebook *says so* and renders what it can.
    """
    log.info("note: %s", text)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is not None:
        display(Markdown(f"> **Note.** {text}"))
