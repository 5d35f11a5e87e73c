"""kdplug's own model components (the CIFAR backbones), contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_models() -> List[type]:
    from kdplug.models.cifar import CIFAR_BACKBONES, CifarResNet, CifarVGG, CifarWideResNet
    return [CifarResNet, CifarWideResNet, CifarVGG, *CIFAR_BACKBONES]
