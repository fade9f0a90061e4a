"""``environment({"VAR": "value"})``: environment variables set for a block, restored (or unset) after it.

One helper for the places that hand settings to code they call (a notebook kernel, a run store, an
offline asset check, the compiler's PATH), so none of them restores by hand and none leaks a value
when the block raises.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

__all__ = ["environment"]


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
