"""Models by name: a string in the config selects an implementation.

- custom (`engine.models.custom`): `small_cnn` and the small-image `resnet`.
- timm / torchvision (`engine.models.zoo`): any `timm.create_model` or `torchvision.models.get_model`
  name, adapted for the run (weights file, small-image stem, head, freezing).
"""

from engine.models.custom import CUSTOM_MODELS, BasicBlock, CifarResNet, ShakeDropFn, SmallCNN, SqueezeExcite, drop_path
from engine.models.zoo import (
    INIT_MIN_SHARE,
    ModelError,
    apply_small_stem,
    backbone_parameters,
    build_model,
    head_parameters,
    hub_weights_obtainable,
    matching_tensors,
    pretrained_cached,
    replace_head,
    set_frozen,
)

__all__ = [
    "CUSTOM_MODELS",
    "BasicBlock",
    "CifarResNet",
    "ShakeDropFn",
    "SmallCNN",
    "SqueezeExcite",
    "drop_path",
    "INIT_MIN_SHARE",
    "ModelError",
    "apply_small_stem",
    "backbone_parameters",
    "build_model",
    "head_parameters",
    "hub_weights_obtainable",
    "matching_tensors",
    "pretrained_cached",
    "replace_head",
    "set_frozen",
]
