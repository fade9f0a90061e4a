"""micronet-companion: the reusable parts of Kim, Kim & Yun (MicroNet Challenge 2019).

Modules, one paper component each: ``data``, ``assets``, ``models``, ``regularizers``, ``augment``,
``pruning``, ``scoring``, ``quantize``, ``train``, ``results``, ``pipeline``; ``cli`` wires them to ``micronet``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
