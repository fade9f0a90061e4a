"""Model zoo: MicroNet ver1/ver2 (docs/method.md §3), the authors' released checkpoints (§4), baselines.

``build_model(name, **options)`` / ``list_models()`` are the only lookup; importing this package
registers every builder: ``micronet_v1``/``micronet_v2`` (``micronet``), ``wrn28_10`` (``wrn``, the
challenge's reference network) and ``mobilenetv2_cifar`` (``mobilenetv2``, a comparison baseline).
"""

from micronet_lib.models.registry import build_model, list_models, model_builder, register_model
from micronet_lib.models import blocks, micronet, mobilenetv2, wrn  # noqa: F401  (registers the builders)
from micronet_lib.models.blocks import HSwish, MicroBlock, SqueezeExcite
from micronet_lib.models.micronet import MicroNet, MicroNetConfig, StageConfig, weight_group
from micronet_lib.models.checkpoints import RELEASED_CHECKPOINTS, ReleasedCheckpoint, load_checkpoint, load_released

__all__ = [
    "build_model",
    "list_models",
    "model_builder",
    "register_model",
    "HSwish",
    "SqueezeExcite",
    "MicroBlock",
    "MicroNet",
    "MicroNetConfig",
    "StageConfig",
    "weight_group",
    "RELEASED_CHECKPOINTS",
    "ReleasedCheckpoint",
    "load_released",
    "load_checkpoint",
]
