"""kdplug's model components: the CIFAR backbones of the distillation papers (:mod:`kdplug.models.cifar`).

They reach the registry through :mod:`kdplug.models.plugin`, never at import time; build them by name, e.g.
``backbone=dict(type='kdplug.ResNet8x4')`` in an mmpretrain ``ImageClassifier``. The classes are re-exported here
lazily, so that loading the plugin module imports neither torch nor mmengine.model before its hook runs.
"""
import importlib

_CIFAR = ('CifarResNet', 'CifarWideResNet', 'CifarVGG', 'ResNet8', 'ResNet14', 'ResNet20', 'ResNet32', 'ResNet44',
          'ResNet56', 'ResNet110', 'ResNet8x4', 'ResNet32x4', 'WRN16_2', 'WRN40_1', 'WRN40_2', 'VGG8', 'VGG13',
          'CIFAR_BACKBONES')

__all__ = list(_CIFAR)


def __getattr__(name: str):
    if name in _CIFAR:
        return getattr(importlib.import_module('kdplug.models.cifar'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + __all__)
