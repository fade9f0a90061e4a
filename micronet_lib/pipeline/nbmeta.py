"""The notebooks' metadata as JupyterLab writes it (issue #32): opening and saving a notebook leaves no diff.

Lab's autosave writes the kernel's ``language_info`` into the notebook. The committed notebooks carry that
block already (``NOTEBOOK_METADATA``, what ipykernel reports for the project's Python), so a save writes the
same bytes. A kernel on another Python patch release would write its own ``version``: ``micronet lab``
installs ``pre_save_hook``, which puts the committed block back before every save. ``normalise`` is the
same step for a notebook read with nbformat (the tests check every committed notebook against it).
"""

from __future__ import annotations

import copy
from typing import Any, MutableMapping

__all__ = ["NOTEBOOK_METADATA", "normalise", "pre_save_hook", "PRE_SAVE_HOOK"]

NOTEBOOK_METADATA: dict[str, Any] = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": "3.11.7",  # the Python of the project's environment (environment.yml, the CI image)
    },
}
PRE_SAVE_HOOK = "micronet_lib.pipeline.nbmeta.pre_save_hook"  # the import string Jupyter's config takes


def normalise(nb: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Set a notebook's kernelspec and language_info to the committed ones; other metadata is kept."""
    metadata = nb.setdefault("metadata", {})
    for key, value in NOTEBOOK_METADATA.items():
        metadata[key] = copy.deepcopy(value)
    return nb


def pre_save_hook(model: MutableMapping[str, Any], **_: Any) -> None:
    """Jupyter's ``ContentsManager.pre_save_hook``: a Python notebook is saved with the committed metadata."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), MutableMapping):
        return
    language = model["content"].get("metadata", {}).get("language_info", {}).get("name", "python")
    if language == "python":
        normalise(model["content"])
