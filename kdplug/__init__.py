"""kdplug: normalized-logit knowledge distillation for OpenMMLab, with plugins.

Importing kdplug is cheap and has no side effects: nothing registers, and neither mmpretrain nor mmdet is
imported. Components arrive in :mod:`kdplug.registry` on first lookup, through the plugin hooks.
"""
import pluggy

__version__ = '0.1.0'

#: Marker for plugin hook implementations: ``@kdplug.hookimpl def kdplug_losses(): ...``.
hookimpl = pluggy.HookimplMarker('kdplug')

__all__ = ['__version__', 'hookimpl']
