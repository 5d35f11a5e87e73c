"""kdplug's own model components (the CIFAR backbones, the student-module wrapper, letKD's layer and loss),
contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_models() -> List[type]:
    from kdplug.models.cifar import CIFAR_BACKBONES, CifarResNet, CifarVGG, CifarWideResNet
    from kdplug.models.student_modules import BackboneWithModules
    return [CifarResNet, CifarWideResNet, CifarVGG, *CIFAR_BACKBONES, BackboneWithModules]


@hookimpl
def kdplug_student_modules() -> List[type]:
    # letKD's layer (inserted into the student) and the loss that trains it against the teacher's codewords
    from kdplug.models.letkd import LetKDLayer, LetKDLoss
    return [LetKDLayer, LetKDLoss]
