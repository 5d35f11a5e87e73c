"""The plugin manager: kdplug's own plugins, then third-party ones from the entry-point group ``kdplug``.

Loading happens once, on the first lookup in a kdplug registry (or an explicit :func:`load_plugins`):

1. the builtin plugin modules (``BUILTIN_PLUGINS``), the same way as any other plugin;
2. unless ``KDPLUG_DISABLE_PLUGIN_AUTOLOAD`` is set (to anything but ``0``/empty), every entry point of the group
   ``kdplug``, each registered under its entry-point name;
3. hook names are checked (a misspelled ``@hookimpl`` is an error), every hook is called, and each class it returns
   is checked against the hook's kind (:data:`HOOK_KINDS`).

This module only loads and collects (:func:`plugin_infos`); :mod:`kdplug.registry` registers each contribution into
the registry of its hook under its class name.

``KDPLUG_BLOCK_PLUGINS=name1,name2`` skips named plugins (entry-point names, or builtin module names such as
``kdplug.losses.plugin``); a name that is neither is an error, so that a typo cannot leave the plugin loaded. Errors
name the plugin, its distribution and the fix.
"""
import difflib
import importlib
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Dict, List, Optional, Sequence, Tuple

import pluggy

from . import hookspecs

GROUP = 'kdplug'
DISABLE_AUTOLOAD_ENV = 'KDPLUG_DISABLE_PLUGIN_AUTOLOAD'
BLOCK_ENV = 'KDPLUG_BLOCK_PLUGINS'

#: kdplug's own plugins: modules with ``@hookimpl`` functions, loaded by name like pytest's default plugins.
BUILTIN_PLUGINS = (
    'kdplug.losses.plugin',
    'kdplug.distillers.plugin',
    'kdplug.tasks.plugin',
    'kdplug.teachers.plugin',
    'kdplug.engine.plugin',
    'kdplug.models.plugin',
    'kdplug.letkd.plugin',
    'kdplug.transforms.plugin',
)


class PluginError(RuntimeError):
    """A plugin could not be loaded or clashes with another one; the message names it and the fix."""


@dataclass
class PluginInfo:
    """One loaded plugin and what it contributed: hook name -> classes (and their names, as registered)."""
    name: str
    distribution: str
    version: str
    module: str
    classes: Dict[str, List[type]] = field(default_factory=dict)

    @property
    def contributions(self) -> Dict[str, List[str]]:
        return {hook: [cls.__name__ for cls in classes] for hook, classes in self.classes.items()}


#: What each hook's classes must subclass (module, class name; imported when checked): the contract of
#: :mod:`kdplug.hookspecs`, checked for every contribution so that a wrong one names its plugin at load time.
HOOK_KINDS = {
    'kdplug_losses': ('torch.nn', 'Module'),
    'kdplug_distillers': ('mmengine.model', 'BaseModel'),
    'kdplug_tasks': ('kdplug.tasks.base', 'Task'),
    'kdplug_teachers': ('kdplug.teachers.base', 'TeacherSource'),
    'kdplug_models': ('torch.nn', 'Module'),
    'kdplug_student_modules': ('torch.nn', 'Module'),
    'kdplug_engine_hooks': ('mmengine.hooks', 'Hook'),
    'kdplug_transforms': ('mmcv.transforms', 'BaseTransform'),
}


_lock = threading.RLock()
_manager: Optional[pluggy.PluginManager] = None
_infos: Dict[str, PluginInfo] = {}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, '').strip() not in ('', '0', 'false', 'False')


def blocked_plugins() -> set:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, '').split(',') if n.strip()}


def _plugin_entry_points() -> List[EntryPoint]:
    """The entry points of the group ``kdplug``, by name; discovering them imports nothing."""
    return sorted(entry_points(group=GROUP), key=lambda e: e.name)


def misspelled_groups() -> Dict[str, List[str]]:
    """Entry-point groups of the installed packages whose name is close to kdplug's (``kdplg``, ``kd_plug``), each
    with the distributions that declare entry points there: a plugin declared there is never loaded, without a
    word."""
    groups = set(entry_points().groups) - {GROUP}
    return {group: sorted({_entry_point_dist(ep)[0] for ep in entry_points(group=group)})
            for group in difflib.get_close_matches(GROUP, sorted(groups), n=3, cutoff=0.75)}


def _check_blocked(blocked: set, eps: Sequence[EntryPoint]) -> None:
    """A blocked name that matches no plugin blocks nothing: most likely a typo that leaves the plugin loaded."""
    installed = sorted({ep.name for ep in eps})
    known = [*BUILTIN_PLUGINS, *installed]
    unknown = sorted(blocked - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        if close:
            hints.append(f'{name!r}: did you mean {" or ".join(repr(c) for c in close)}?')
    raise PluginError(
        f'{BLOCK_ENV}={os.environ.get(BLOCK_ENV, "")} names no kdplug plugin {", ".join(repr(n) for n in unknown)}, '
        'and such a name blocks nothing. ' + ''.join(h + ' ' for h in hints)
        + f'Known plugins: the builtins {", ".join(BUILTIN_PLUGINS)}; the entry points of group "{GROUP}" '
        f'(installed, whether or not {DISABLE_AUTOLOAD_ENV} is set): {", ".join(installed) or "none"}. '
        f'Fix the spelling, or remove the name from {BLOCK_ENV}')


def _entry_point_dist(ep: EntryPoint) -> Tuple[str, str]:
    """(distribution name, version) of an entry point, '?' where its metadata is missing."""
    dist = getattr(ep, 'dist', None)
    if dist is None:
        return '?', '?'
    return dist.metadata['Name'], dist.version


def _hook_result_error(info: PluginInfo, hook_name: str, result: object) -> PluginError:
    """A hook returned something else than a list/tuple of classes: say what, and what to write instead."""
    if isinstance(result, type):
        what, example = f'the class {result.__qualname__} itself', result.__name__
    else:
        shown = repr(result)
        shown = shown if len(shown) <= 200 else shown[:200] + '...'
        what, example = f'{type(result).__name__} {shown}', 'MyLoss'
    return PluginError(
        f'kdplug plugin {info.name!r} ({info.distribution}, {info.module}): its hook {hook_name}() returned {what}, '
        f'not a list of classes. Return a list, e.g. `return [{example}]` (a tuple works too; return [] for none)')


def _fixes(info: PluginInfo) -> str:
    """How a user gets past a broken third-party plugin."""
    return (f'Fix or reinstall that package, uninstall it (pip uninstall {info.distribution}), block it with '
            f'{BLOCK_ENV}={info.name}, or turn off third-party plugins with {DISABLE_AUTOLOAD_ENV}=1')


def _register(pm: pluggy.PluginManager, module: object, info: PluginInfo) -> None:
    earlier = pm.get_plugin(info.name)
    if earlier is not None:  # pluggy's own message lists every plugin registered so far and names neither owner
        first = _infos.get(info.name)
        raise PluginError(
            f'two distributions declare the kdplug plugin (entry point) {info.name!r} in group "{GROUP}": '
            f'{first.distribution if first else "?"} ({first.module if first else "?"}) and {info.distribution} '
            f'({info.module}). Uninstall one of them, or rename the entry point in one package '
            f'({BLOCK_ENV}={info.name} would block both)')
    if pm.is_registered(module):
        other = pm.get_name(module)
        raise PluginError(
            f'the entry points {other!r} and {info.name!r} of {info.distribution} both name {info.module}: a plugin '
            f'module is registered once; keep one entry point in the package\'s [project.entry-points."{GROUP}"]')
    try:
        pm.register(module, name=info.name)
    except pluggy.PluginValidationError as err:  # a hook whose arguments the hookspec does not have
        raise PluginError(f'kdplug plugin {info.name!r} ({info.distribution}, {info.module}): {err}. A hook takes '
                          'the arguments of its spec in kdplug/hookspecs.py (every kdplug hook takes none): '
                          f'`def kdplug_losses(): return [MyLoss]`. {_fixes(info)}') from err
    if not pm.get_hookcallers(module):
        raise PluginError(_contributes_nothing(module, info))
    _infos[info.name] = info


def _contributes_nothing(module: object, info: PluginInfo) -> str:
    """Why a registered plugin has no hook: undecorated hook functions, or an entry point that names an object."""
    undecorated = sorted(name for name in dir(module)
                         if name.startswith('kdplug_') and callable(getattr(module, name)))
    if undecorated:
        why = (f'its functions {", ".join(undecorated)} are not marked as hooks: decorate each with @hookimpl '
               '(`from kdplug import hookimpl`)')
    elif ':' in info.module:
        why = (f'its entry point names the object {info.module}, not a module: name the module that holds the '
               f'@hookimpl functions ({info.module.split(":")[0]})')
    else:
        why = 'it has no @hookimpl function (`from kdplug import hookimpl`; kdplug/hookspecs.py lists the hooks)'
    return f'kdplug plugin {info.name!r} ({info.distribution}, {info.module}) contributes nothing: {why}'


def _load_builtins(pm: pluggy.PluginManager, blocked: set) -> None:
    from . import __version__
    for module_name in BUILTIN_PLUGINS:
        if module_name in blocked:
            continue
        module = importlib.import_module(module_name)
        _register(pm, module, PluginInfo(module_name, 'kdplug', __version__, module_name))


def _load_entry_points(pm: pluggy.PluginManager, blocked: set, eps: Sequence[EntryPoint]) -> None:
    for ep in eps:
        if ep.name in blocked:
            continue
        dist_name, version = _entry_point_dist(ep)
        info = PluginInfo(ep.name, dist_name, version, ep.value)
        try:
            module = ep.load()
        except SystemExit as err:  # sys.exit() at import would otherwise end the process without a word
            raise PluginError(f'kdplug plugin {ep.name!r} from the distribution {dist_name} {version} called '
                              f'sys.exit (exit code {err.code!r}) while kdplug imported it ({ep.value}). '
                              f'{_fixes(info)}') from err
        except Exception as err:  # any import error of a third-party package must name the package
            raise PluginError(f'kdplug plugin {ep.name!r} from the distribution {dist_name} {version} failed to '
                              f'import ({ep.value}): {type(err).__name__}: {err}. {_fixes(info)}') from err
        _register(pm, module, info)


def _check_hook_names(pm: pluggy.PluginManager) -> None:
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        plugin_name = pm.get_name(err.plugin) if err.plugin is not None else '?'
        info = _infos.get(plugin_name)
        dist = f' ({info.distribution})' if info else ''
        raise PluginError(f'kdplug plugin {plugin_name!r}{dist}: {err}. The hooks kdplug knows are '
                          f'{", ".join(sorted(n for n in dir(hookspecs) if n.startswith("kdplug_")))}: '
                          'rename the function to one of them') from err


def _collect_contributions(pm: pluggy.PluginManager) -> None:
    """Call every hook of every plugin; check that it returned a list of classes of the hook's kind."""
    for hook_name, (module_name, base_name) in HOOK_KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():  # in registration order
            info = _infos[impl.plugin_name]
            try:
                contributed = impl.function()
            except SystemExit as err:  # as at import: a plugin must not end the process silently
                raise PluginError(f'kdplug plugin {info.name!r} ({info.distribution} {info.version}): its hook '
                                  f'{hook_name}() called sys.exit (exit code {err.code!r}). {_fixes(info)}') from err
            except Exception as err:
                raise PluginError(f'kdplug plugin {info.name!r} ({info.distribution} {info.version}): its hook '
                                  f'{hook_name}() raised {type(err).__name__}: {err}. {_fixes(info)}') from err
            if contributed is None:  # a hook of kdplug returns its classes: None is a forgotten `return`
                raise PluginError(f'kdplug plugin {info.name!r} ({info.distribution} {info.version}): its hook '
                                  f'{hook_name}() returned None: did it forget `return [MyClass, ...]`? A hook '
                                  f'with nothing to contribute returns [] (or is left out). {_fixes(info)}')
            # a bare class fails with a TypeError, a str or dict iterates its characters or keys: take a list or
            # tuple only, and say so
            if not isinstance(contributed, (list, tuple)):
                raise _hook_result_error(info, hook_name, contributed)
            base = getattr(importlib.import_module(module_name), base_name)
            for cls in contributed:
                if not isinstance(cls, type):
                    fix = ('return the class, not its name' if isinstance(cls, str) else
                           f'return the class itself ([{type(cls).__name__}], not an instance: kdplug builds it from '
                           'the config)')
                    raise PluginError(f'kdplug plugin {info.name!r} ({info.distribution}): {hook_name}() must '
                                      f'return classes, got {cls!r}: {fix}. {_fixes(info)}')
                if not issubclass(cls, base):
                    raise PluginError(
                        f'kdplug plugin {info.name!r} ({info.distribution}): {hook_name}() returned '
                        f'{cls.__module__}.{cls.__qualname__}, which is not a {module_name}.{base_name}: each class '
                        f'of {hook_name}() must subclass it (see kdplug/hookspecs.py), or belongs to another hook')
                info.classes.setdefault(hook_name, []).append(cls)


def load_plugins() -> pluggy.PluginManager:
    """Load every plugin once and collect what it contributes (:func:`plugin_infos`); returns the pluggy manager.

    Registering the contributions is :mod:`kdplug.registry`'s job: this module only loads."""
    global _manager
    with _lock:
        if _manager is not None:
            return _manager
        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        blocked = blocked_plugins()
        for name in blocked:
            pm.set_blocked(name)
        try:
            # discovered (not loaded) even without autoload: their names are what KDPLUG_BLOCK_PLUGINS is checked
            # against, before any plugin is imported (a typo'd block of a broken plugin is reported as the typo)
            eps = _plugin_entry_points()
            _check_blocked(blocked, eps)
            _load_builtins(pm, blocked)
            if not _env_flag(DISABLE_AUTOLOAD_ENV):
                _load_entry_points(pm, blocked, eps)
            _check_hook_names(pm)
            _collect_contributions(pm)
        except BaseException:
            forget_plugins()
            raise
        _manager = pm
        return pm


def plugin_infos() -> List[PluginInfo]:
    """The loaded plugins, builtins first, with their contributions."""
    load_plugins()
    return list(_infos.values())


def forget_plugins() -> None:
    """Forget the loaded plugins (a failed load; kdplug.registry's reset)."""
    global _manager
    with _lock:
        _infos.clear()
        _manager = None


def skipped_plugins() -> Dict[str, str]:
    """Installed plugins (entry-point name -> why) that this process does not load: blocked or autoload off."""
    skipped = {}
    blocked, autoload_off = blocked_plugins(), _env_flag(DISABLE_AUTOLOAD_ENV)
    for ep in _plugin_entry_points():
        if ep.name in blocked:
            skipped[ep.name] = f'{BLOCK_ENV} names it'
        elif autoload_off:
            skipped[ep.name] = f'{DISABLE_AUTOLOAD_ENV} is set'
    return skipped


def format_plugins() -> str:
    """A table of every plugin: name, distribution, version and what it contributed; then the installed ones that
    are not loaded, and why."""
    lines = []
    for info in plugin_infos():
        lines.append(f'{info.name}  [{info.distribution} {info.version}]  ({info.module})')
        for hook_name, names in info.contributions.items():
            if names:
                lines.append(f'    {hook_name}: {", ".join(names)}')
    lines.extend(f'{name}  skipped: {why}' for name, why in skipped_plugins().items())
    lines.extend(f'entry points in the group {group!r} are not read: did their package ({", ".join(dists)}) mean '
                 f'"{GROUP}"?' for group, dists in misspelled_groups().items())
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``kdplug-list-plugins`` / tools/list_plugins.py: the table of :func:`format_plugins` (``--help`` says so,
    an unknown argument is an error). The plugins are registered as a run registers them, so a name clash between
    two plugins is reported here too; a plugin error is printed as its message, exit status 1."""
    import argparse
    import sys

    from .registry import register_plugins
    argparse.ArgumentParser(description='Print every kdplug plugin (builtin and third-party), its distribution and '
                            'version, and what it contributed.').parse_args(argv)
    try:
        register_plugins()
    except PluginError as err:
        sys.exit(f'kdplug-list-plugins: {err}')
    print(format_plugins())
