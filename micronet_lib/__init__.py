"""micronet-companion: the reusable parts of Kim, Kim & Yun (MicroNet Challenge 2019).

Packages, one paper component each: ``data``, ``assets``, ``models``, ``regularizers``, ``augment``,
``pruning``, ``scoring``, ``quantize``, ``train``, ``experiments``; around them ``accel`` (the optional
speed layer), ``runstore`` (run folders), ``report`` (tables, figures, claims), ``pipeline`` (the
notebooks), ``bench`` (``micronet bench``); ``cli`` wires them to ``micronet``. Map: docs/layout.md.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
