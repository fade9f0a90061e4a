"""Input augmentation (docs/method.md §5.1, §5.2, §7): FastAA ops and policies, named pipelines, a gallery.

- :mod:`.ops`: the 15 FastAA ops on uint8 tensors (torchvision v2 kernels, PIL semantics).
- :mod:`.fastaa`: the four CIFAR-100 policy sets and their seeded, per-image application.
- :mod:`.pipelines`: ``build_pipeline(name, mean=, std=)`` → :class:`AugmentPipeline`.
- :mod:`.pil_ops`: the authors' per-image PIL pipeline, the benchmark's and tests' reference.
- :mod:`.gallery`: a grid of augmented examples per pipeline, for the notebooks.
"""

from __future__ import annotations

from micronet_lib.augment.fastaa import FASTAA_4X_ORDER, FASTAA_DEFAULT_SET, FastAAStage, policy_set, resolve_set_name
from micronet_lib.augment.gallery import augmentation_gallery
from micronet_lib.augment.ops import CUTOUT_FILL, OPS, apply_op, op_magnitude
from micronet_lib.augment.pipelines import AugmentPipeline, build_pipeline, list_pipelines, register_pipeline

__all__ = [
    "AugmentPipeline",
    "CUTOUT_FILL",
    "FASTAA_4X_ORDER",
    "FASTAA_DEFAULT_SET",
    "FastAAStage",
    "OPS",
    "apply_op",
    "augmentation_gallery",
    "build_pipeline",
    "list_pipelines",
    "op_magnitude",
    "policy_set",
    "register_pipeline",
    "resolve_set_name",
]
