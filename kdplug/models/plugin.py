"""kdplug's own model components (the CIFAR backbones, the student-module wrapper), contributed through the plugin
hooks; letKD's layer and loss come through :mod:`kdplug.letkd.plugin`."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_models() -> List[type]:
    from kdplug.models.cifar import CIFAR_BACKBONES, CifarResNet, CifarVGG, CifarWideResNet
    from kdplug.models.student_modules import BackboneWithModules
    return [CifarResNet, CifarWideResNet, CifarVGG, *CIFAR_BACKBONES, BackboneWithModules]
