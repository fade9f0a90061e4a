"""The paper's structural regularisers (docs/method.md §5.5, §6) as small reusable parts.

- :mod:`.orthogonality`: the SRIP-style penalty on 1×1 convolutions (§6.1).
- :mod:`.labels`: plain / uniformly smoothed / weighted-label-smoothing losses behind one interface
  that also takes CutMix/Mixup label pairs (§6.2, §6.3).
- :mod:`.mixing`: CutMix with the authors' box sampling and λ correction (§6.4), Mixup, Cutout (§7.5).
"""

from __future__ import annotations

from micronet_lib.regularizers.labels import (
    LOSS_KINDS,
    LS_EPSILON,
    WLS_EPSILON_PRUNE,
    WLS_EPSILON_TRAIN,
    LabelLoss,
    class_similarity,
    default_epsilon,
    make_loss,
)
from micronet_lib.regularizers.mixing import cutmix, cutmix_box, cutout, mixup
from micronet_lib.regularizers.orthogonality import (
    LAYER_SETS,
    ORTHO_COEFFICIENT,
    ORTHO_COEFFICIENT_README,
    layer_spectral_penalty,
    orthogonality_penalty,
    select_layers,
)

__all__ = [
    "LAYER_SETS",
    "LOSS_KINDS",
    "LS_EPSILON",
    "LabelLoss",
    "ORTHO_COEFFICIENT",
    "ORTHO_COEFFICIENT_README",
    "WLS_EPSILON_PRUNE",
    "WLS_EPSILON_TRAIN",
    "class_similarity",
    "cutmix",
    "cutmix_box",
    "cutout",
    "default_epsilon",
    "layer_spectral_penalty",
    "make_loss",
    "mixup",
    "orthogonality_penalty",
    "select_layers",
]
