"""kdplug's mmengine registries (scope ``kdplug``), filled from the plugins on first lookup.

``MODELS`` holds losses, distillers and model components; ``TASKS`` the downstream tasks and ``TEACHERS`` the
teacher sources of ``kdplug.Distiller``; ``HOOKS`` holds mmengine hooks; ``TRANSFORMS`` holds data transforms.
Build from them directly, whatever the default scope of the run::

    from kdplug.registry import MODELS
    loss = MODELS.build(dict(type='NormKDLoss', t_norm=2.0))

or from another OpenMMLab package's config with the scope prefix: ``dict(type='kdplug.NormKDLoss', t_norm=2.0)``
(mmengine imports this module for the ``kdplug`` scope and finds these children of its root registries).

Creating the registries registers nothing: :meth:`PluginRegistry.import_from_location`, which mmengine calls on
every lookup, loads the plugins once (:func:`kdplug.plugins.load_plugins`) and registers what they contributed
(:func:`register_plugins`).
"""
import difflib
import inspect
import threading
from typing import Any, Dict, Optional

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

SCOPE = 'kdplug'


#: Names of earlier kdplug versions and what replaced them, said where a config still uses them.
REPLACED = {
    'LetKDLoss': "type='LetKDPenultimateLoss' for level='penultimate' (letKD-1), type='LetKDIntermediateLoss' for "
                 "level='intermediate' (letKD-2's middle stage), without the level key",
}
#: Config keys of earlier kdplug versions, by (type, key), and what replaced them.
REPLACED_KEYS = {
    ('MLKDLoss', 'faithful'): "faithful=False is now type='CorrectedMLKDLoss', faithful=True MLKDLoss itself: drop "
                              "the key",
}


class UnknownTypeError(KeyError):
    """An unknown ``type`` in a kdplug registry (a KeyError, printed as plain text rather than as a repr)."""

    def __str__(self) -> str:
        return str(self.args[0])


class PluginRegistry(Registry):
    """An mmengine Registry whose lazy import step loads kdplug's plugins, and whose build ignores the default
    scope of the run (a kdplug registry always builds from itself, then its parent)."""

    def import_from_location(self) -> None:
        if not self._imported:
            register_plugins()

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise TypeError(f'a {self.name} config must be a dict with a "type" key, got {cfg!r}')
        cfg = dict(cfg)
        obj_type = cfg.pop('type')
        cfg.pop('_scope_', None)
        if not isinstance(obj_type, str):
            return obj_type(*args, **cfg, **kwargs)
        obj_cls = self.get(obj_type)
        if obj_cls is None:
            raise self.unknown_type(obj_type)
        self.check_keys(obj_cls, obj_type, cfg, *args, **kwargs)
        return obj_cls(*args, **cfg, **kwargs)

    def unknown_type(self, obj_type: str) -> UnknownTypeError:
        """The error of a ``type`` this registry does not hold: the closest names, every registered one, and the
        plugins that are installed but not loaded."""
        names = sorted(self.all_names())
        close = difflib.get_close_matches(obj_type.split('.')[-1], names, n=3)
        hint = f' Did you mean {" or ".join(repr(c) for c in close)}?' if close else ''
        if obj_type.split('.')[-1] in REPLACED:
            hint = f' It was replaced: {REPLACED[obj_type.split(".")[-1]]}.'
        from .plugins import misspelled_groups, skipped_plugins
        skipped = ''.join(f' The installed plugin {name!r} is not loaded: {why}.'
                          for name, why in skipped_plugins().items())
        skipped += ''.join(f' Installed entry points in the group {group!r} are not read: did their package '
                           f'({", ".join(dists)}) mean "{SCOPE}"?' for group, dists in misspelled_groups().items())
        return UnknownTypeError(
            f'{obj_type!r} is not in the kdplug::{self.name} registry.{hint} Registered: {", ".join(names)}.'
            f'{skipped} A component of a third-party plugin appears once its package is installed (entry-point '
            'group "kdplug"); run tools/list_plugins.py to see what each plugin contributed.')

    @staticmethod
    def check_keys(obj_cls: type, obj_type: str, cfg: Dict[str, Any], *args: Any, **kwargs: Any) -> None:
        """Raise a TypeError naming the closest parameter of each config key that ``obj_cls`` does not take (only
        a config that does not fit the signature is a config error; the constructor's own errors pass through)."""
        try:
            signature = inspect.signature(obj_cls)
        except ValueError:  # no signature to check (a builtin): let the call tell
            return
        try:
            signature.bind(*args, **cfg, **kwargs)
        except TypeError as err:
            accepted = [name for name, p in signature.parameters.items()
                        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            close = {key: difflib.get_close_matches(key, accepted, n=1) for key in cfg if key not in accepted}
            hints = ''.join(f' Did you mean {found[0]!r} for {key!r}?' for key, found in close.items() if found)
            hints += ''.join(f' {key!r} was replaced: {REPLACED_KEYS[obj_cls.__name__, key]}.' for key in cfg
                             if (obj_cls.__name__, key) in REPLACED_KEYS)
            takes = f'It takes: {", ".join(accepted)}' if accepted else 'It takes no options'
            raise TypeError(f'{obj_type}({", ".join(cfg)}): {err}.{hints} {takes}. Check the keys of its config '
                            f'against {obj_cls.__module__}.{obj_cls.__qualname__} (a key of the same dict in a '
                            '_base_ config stays unless the dict says _delete_=True, e.g. to put another type in its '
                            'place)') from err

    def all_names(self) -> list:
        self.import_from_location()
        return list(self._module_dict)


MODELS = PluginRegistry('model', parent=MMENGINE_MODELS, scope=SCOPE)
HOOKS = PluginRegistry('hook', parent=MMENGINE_HOOKS, scope=SCOPE)
TRANSFORMS = PluginRegistry('transform', parent=MMENGINE_TRANSFORMS, scope=SCOPE)
TASKS = PluginRegistry('task', scope=SCOPE)
TEACHERS = PluginRegistry('teacher source', scope=SCOPE)

#: Which registry each hook of :mod:`kdplug.hookspecs` fills.
HOOK_REGISTRIES = {
    'kdplug_losses': MODELS,
    'kdplug_distillers': MODELS,
    'kdplug_tasks': TASKS,
    'kdplug_teachers': TEACHERS,
    'kdplug_models': MODELS,
    'kdplug_student_modules': MODELS,
    'kdplug_engine_hooks': HOOKS,
    'kdplug_transforms': TRANSFORMS,
}

_lock = threading.RLock()


def register_plugins() -> None:
    """Load the plugins (once) and register every class they contribute into the registry of its hook; a class
    name contributed twice to one registry is an error naming both plugins. Runs on the first lookup in any kdplug
    registry, and sets torch's weights-only allow-list for mmengine checkpoints on the way."""
    from .engine.checkpoint import allow_mmengine_checkpoints
    from .plugins import BLOCK_ENV, PluginError, forget_plugins, load_plugins, plugin_infos
    with _lock:
        if all(registry._imported for registry in HOOK_REGISTRIES.values()):
            return
        for registry in HOOK_REGISTRIES.values():
            registry._imported = True  # before loading: a plugin's import may look a name up
        try:
            # a kdplug config run by any tool (mmpretrain's, mmdet's, a plain Runner) resumes under torch >= 2.6
            allow_mmengine_checkpoints()
            load_plugins()
            owners: Dict[tuple, tuple] = {}  # (registry, class name) -> (plugin, hook, distribution)
            for hook_name, registry in HOOK_REGISTRIES.items():
                for info in plugin_infos():
                    for cls in info.classes.get(hook_name, []):
                        key = (registry.name, cls.__name__)
                        if key in owners or cls.__name__ in registry._module_dict:
                            raise PluginError(name_clash(registry, cls, info, hook_name, owners.get(key), BLOCK_ENV))
                        registry.register_module(name=cls.__name__, module=cls)
                        owners[key] = (info.name, hook_name, info.distribution)
        except BaseException:
            reset_registries()
            forget_plugins()
            raise


def name_clash(registry: Registry, cls: type, info: Any, hook: str, owner: Optional[tuple], block_env: str) -> str:
    """The message of a class name registered twice in ``registry``: by two plugins, twice by one plugin, or by an
    OpenMMLab ``@register_module()`` decorator besides the plugin's hook (kdplug's registries take hooks only).
    ``hook``: the plugin's hook that returned ``cls``; ``owner``: (plugin, hook, distribution) of the first
    registration, None when no plugin made it."""
    name = cls.__name__
    variable = next(n for n in ('MODELS', 'HOOKS', 'TRANSFORMS', 'TASKS', 'TEACHERS') if globals()[n] is registry)
    where = f'the kdplug::{registry.name} registry'
    this = f'plugin {info.name!r} ({info.distribution})'
    if owner is None and registry._module_dict.get(name) is cls:
        return (f'{name!r} from {this} is registered twice in {where}: by a @kdplug.registry.{variable}.'
                'register_module() decorator and by the plugin\'s hook. kdplug\'s registries are filled by the hooks '
                'alone: remove the decorator')
    if owner is None:
        return (f'name clash in {where}: {name!r} from {this} is already registered by other code (a '
                '@register_module() decorator?). Rename the class, or remove that registration: a plugin\'s hook '
                'registers its classes')
    if owner[0] == info.name:
        twice = f'from {owner[1]}() and from {hook}()' if owner[1] != hook else f'twice from {hook}()'
        return f'{this} returns {name!r} {twice}: return each class once, from the hook of its kind'
    first = f'plugin {owner[0]!r} ({owner[2]})'
    if owner[2] == 'kdplug' or info.distribution == 'kdplug':  # blocking kdplug's module drops all its classes
        plugin = info.name if owner[2] == 'kdplug' else owner[0]
        return (f'name clash in {where}: {name!r} from {this} is already contributed by {first}, and kdplug\'s own '
                f'names stay: rename the class in {plugin!r} (its config then names the new name), or uninstall it '
                f'({block_env}={plugin} skips all of that plugin)')
    return (f'name clash in {where}: {name!r} from {this} is already contributed by {first}. Rename the class in one '
            f'of the two packages, or skip one plugin with {block_env}={info.name} or {block_env}={owner[0]}')


def reset_registries() -> None:
    """Empty the kdplug registries; the next lookup loads and registers the plugins again."""
    with _lock:
        for registry in HOOK_REGISTRIES.values():
            registry._module_dict.clear()
            registry._imported = False
