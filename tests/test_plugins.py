"""The plugin system: entry points + pluggy hooks + mmengine registries, with clear errors."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, pip_install_to

BUILD_KD = "from kdplug.registry import MODELS; print(type(MODELS.build(dict(type='KDLoss'))).__name__)"


def fake_distribution(root: Path, name: str, module_code: str, entry_point: str = None,
                      entry_points: str = None) -> Path:
    """A distribution on sys.path (dist-info + module) that declares a plugin in the entry-point group kdplug:
    ``entry_point = <name>_plugin``, or the lines ``entry_points`` of its [kdplug] section."""
    module = f'{name}_plugin'
    (root / f'{module}.py').write_text(textwrap.dedent(module_code))
    info = root / f'{name}-1.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n')
    (info / 'entry_points.txt').write_text(f'[kdplug]\n{entry_points or f"{entry_point or name} = {module}"}\n')
    return root


def test_import_kdplug_is_cheap_and_registers_nothing(python):
    result = python(textwrap.dedent('''
        import sys, kdplug
        heavy = [m for m in ('mmengine', 'mmpretrain', 'mmdet', 'mmcv') if m in sys.modules]
        assert not heavy, heavy
        import kdplug.registry, kdplug.losses
        assert not kdplug.registry.MODELS._module_dict, 'registered at import'
        assert not [m for m in ('mmpretrain', 'mmdet') if m in sys.modules]
        from kdplug.registry import MODELS
        MODELS.get('KDLoss')
        assert 'KDLoss' in MODELS._module_dict
        assert not [m for m in ('mmpretrain', 'mmdet') if m in sys.modules]
        print('ok')'''))
    assert result.stdout.strip() == 'ok', result.stderr


def test_build_by_name_from_kdplug_and_from_other_scopes(python):
    result = python(textwrap.dedent('''
        from mmengine.config import Config
        from mmengine.registry import DefaultScope, MODELS as ROOT
        from kdplug.registry import MODELS
        cfg = Config(dict(loss=dict(type='NormKDLoss', t_norm=2.0)))
        print(MODELS.build(cfg.loss).temperature.t_norm)
        with DefaultScope.overwrite_default_scope('mmengine'):
            print(type(ROOT.build(dict(type='kdplug.DKDLoss', beta=2.0))).__name__)
            print(type(MODELS.build(dict(type='NKDLoss'))).__name__)
        from mmpretrain.registry import MODELS as MMPRETRAIN
        with DefaultScope.overwrite_default_scope('mmpretrain'):  # a classification run
            print(type(MMPRETRAIN.build(dict(type='kdplug.KDLoss'))).__name__)
            print(type(MODELS.build(dict(type='MultiTempKDLoss'))).__name__)'''))
    assert result.stdout.split() == ['2.0', 'DKDLoss', 'NKDLoss', 'KDLoss', 'MultiTempKDLoss'], result.stderr


def test_misspelled_type_suggests_the_right_name(python):
    result = python("from kdplug.registry import MODELS; MODELS.build(dict(type='NormKdLoss'))")
    assert "'NormKdLoss' is not in the kdplug::model registry" in result.stderr
    assert "Did you mean 'NormKDLoss'" in result.stderr


def test_wrong_config_key_names_the_class(python):
    result = python("from kdplug.registry import MODELS; MODELS.build(dict(type='NormKDLoss', tnorm=2.0))")
    assert 'NormKDLoss(tnorm)' in result.stderr and 'kdplug.losses.normkd.NormKDLoss' in result.stderr
    assert "Did you mean 't_norm' for 'tnorm'? It takes: t_norm, logit_norm, loss_weight" in result.stderr


def test_a_wrong_distiller_key_names_the_keys_and_where_options_go(python):
    """mmengine's root registry builds model=dict(type='kdplug.Distiller', ...): its bare TypeError said only
    "unexpected keyword argument"."""
    result = python("from mmengine.registry import MODELS; from kdplug.plugins import load_plugins; load_plugins(); "
                    "MODELS.build(dict(type='kdplug.Distiller', task='ClassificationTask', student={}, teacher={}, "
                    "losses={}, loss={}, distill_weight=2))")
    assert "has no key 'loss', 'distill_weight' (did you mean 'losses'?). Its keys are task, student, teacher, " \
        "losses, data_preprocessor, init_cfg; a loss's options go in losses=dict(" in result.stderr, result.stderr


def test_a_constructor_s_own_type_error_is_not_blamed_on_the_config_keys(python):
    """Only a config that does not fit the signature is reported as a config error; an error raised inside a
    valid constructor call passes through unchanged."""
    result = python("from kdplug.registry import TRANSFORMS; "
                    "TRANSFORMS.build(dict(type='ReplayRandomCrop', crop_size=None))")
    assert 'TypeError' in result.stderr and 'Check the keys' not in result.stderr, result.stderr


@pytest.mark.parametrize('hook,kind', [('kdplug_engine_hooks', 'mmengine.hooks.Hook'),
                                       ('kdplug_tasks', 'kdplug.tasks.base.Task'),
                                       ('kdplug_teachers', 'kdplug.teachers.base.TeacherSource')])
def test_a_contribution_of_the_wrong_kind_names_the_plugin(python, tmp_path, hook, kind):
    fake_distribution(tmp_path, 'wrongkind', f'''
        from kdplug import hookimpl
        class NotIt:
            pass
        @hookimpl
        def {hook}():
            return [NotIt]''')
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert f"kdplug plugin 'wrongkind' (wrongkind): {hook}() returned wrongkind_plugin.NotIt" in \
        result.stderr and f'not a {kind}' in result.stderr


def test_name_clash_names_both_plugins(python, tmp_path):
    fake_distribution(tmp_path, 'clashing', '''
        from torch import nn
        from kdplug import hookimpl
        @hookimpl
        def kdplug_losses():
            return [type('KDLoss', (nn.Module,), {})]''')
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert "'KDLoss' from plugin 'clashing' (clashing)" in result.stderr
    # kdplug's own names stay: blocking kdplug.losses.plugin would drop every built-in loss
    assert "already contributed by plugin 'kdplug.losses.plugin' (kdplug), and kdplug's own names stay: rename the " \
        "class in 'clashing'" in result.stderr, result.stderr


def test_a_clash_of_two_third_party_plugins_names_both_distributions(python, tmp_path):
    for name in ('first', 'second'):
        fake_distribution(tmp_path, name, ONE_LOSS.format(name='Same'))
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert re.search(r"'SameLoss' from plugin '(first|second)' \((first|second)\) is already contributed by plugin "
                     r"'(first|second)' \((first|second)\).*KDPLUG_BLOCK_PLUGINS=(first|second) or "
                     r"KDPLUG_BLOCK_PLUGINS=(first|second)", result.stderr), result.stderr


@pytest.mark.parametrize('code, message', [
    # the OpenMMLab habit: a decorator as well as the hook
    ("""
        from torch import nn
        from kdplug import hookimpl
        from kdplug.registry import MODELS
        @MODELS.register_module()
        class DecoLoss(nn.Module):
            pass
        @hookimpl
        def kdplug_losses():
            return [DecoLoss]""", "'DecoLoss' from plugin 'twice' (twice) is registered twice in the kdplug::model "
                                  "registry: by a @kdplug.registry.MODELS.register_module() decorator and by the "
                                  "plugin's hook. kdplug's registries are filled by the hooks alone: remove the "
                                  "decorator"),
    ("""
        from torch import nn
        from kdplug import hookimpl
        class SameLoss(nn.Module):
            pass
        @hookimpl
        def kdplug_losses():
            return [SameLoss]
        @hookimpl
        def kdplug_models():
            return [SameLoss]""", "plugin 'twice' (twice) returns 'SameLoss' from kdplug_losses() and from "
                                  "kdplug_models(): return each class once, from the hook of its kind"),
    ("""
        from torch import nn
        from kdplug import hookimpl
        class SameLoss(nn.Module):
            pass
        @hookimpl
        def kdplug_losses():
            return [SameLoss, SameLoss]""", "plugin 'twice' (twice) returns 'SameLoss' twice from kdplug_losses()"),
    ("""
        from torch import nn
        from kdplug import hookimpl
        class ForgotLoss(nn.Module):
            pass
        @hookimpl
        def kdplug_losses():
            [ForgotLoss]""", "its hook kdplug_losses() returned None: did it forget `return [MyClass, ...]`?"),
])
def test_a_class_registered_twice_or_a_forgotten_return_says_what_to_change(python, tmp_path, code, message):
    """They read "already contributed by plugin 'an earlier registration'" (a decorator) or blamed one package as
    two, with the fix to rename a class; a hook without `return` contributed nothing, without a word."""
    fake_distribution(tmp_path, 'twice', code)
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_a_misspelled_entry_point_group_is_named_where_the_type_is_missing(python, tmp_path):
    """A plugin declared in the group "kdplg" is never loaded: the lookup of its class and the plugin list say so."""
    fake_distribution(tmp_path, 'typo', ONE_LOSS.format(name='Typo'))
    entry_points = next(tmp_path.glob('typo-*.dist-info')) / 'entry_points.txt'
    entry_points.write_text(entry_points.read_text().replace('[kdplug]', '[kdplg]'))
    env = {'PYTHONPATH': str(tmp_path)}
    result = python("from kdplug.registry import MODELS; MODELS.build(dict(type='TypoLoss'))", env=env)
    assert "Installed entry points in the group 'kdplg' are not read: did their package (typo) mean \"kdplug\"?" in \
        result.stderr, result.stderr
    listed = subprocess.run([sys.executable, str(REPO / 'tools' / 'list_plugins.py')], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, **env})
    assert "entry points in the group 'kdplg' are not read: did their package (typo)" in listed.stdout, \
        listed.stdout + listed.stderr


def test_broken_plugin_names_its_distribution_and_the_fixes(python, tmp_path):
    fake_distribution(tmp_path, 'broken', 'import not_a_module_anywhere')
    fake_distribution(tmp_path, 'other', '')  # a second, working plugin for the two-name block below
    env = {'PYTHONPATH': str(tmp_path)}
    result = python(BUILD_KD, env=env)
    assert "plugin 'broken' from the distribution broken 1.0 failed to import" in result.stderr
    assert 'KDPLUG_BLOCK_PLUGINS=broken' in result.stderr and 'KDPLUG_DISABLE_PLUGIN_AUTOLOAD=1' in result.stderr
    # the two switches, as pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD and -p no:NAME
    assert python(BUILD_KD, env={**env, 'KDPLUG_DISABLE_PLUGIN_AUTOLOAD': '1'}).stdout.strip() == 'KDLoss'
    assert python(BUILD_KD, env={**env, 'KDPLUG_BLOCK_PLUGINS': 'other,broken'}).stdout.strip() == 'KDLoss'


def build_with_a_hook_returning(python, tmp_path, returned: str):
    """Build KDLoss with a plugin installed whose kdplug_losses() returns the expression ``returned``."""
    fake_distribution(tmp_path, 'single', f'''
        from torch import nn
        from kdplug import hookimpl
        class MyLoss(nn.Module):
            pass
        @hookimpl
        def kdplug_losses():
            return {returned}''')
    return python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})


@pytest.mark.parametrize('returned, said', [
    ('[MyLoss()]', r'must return classes, got MyLoss\(\): return the class itself \(\[MyLoss\], not an instance'),
    ("['MyLoss']", "must return classes, got 'MyLoss': return the class, not its name"),
])
def test_hook_returning_instances_or_names_in_its_list_says_to_return_the_classes(python, tmp_path, returned, said):
    result = build_with_a_hook_returning(python, tmp_path, returned)
    assert result.returncode != 0 and re.search(said, result.stderr), result.stderr


@pytest.mark.parametrize('returned, shown', [
    ('MyLoss', 'the class MyLoss itself'),  # the usual slip: a bare TypeError before
    ("'MyLoss'", "str 'MyLoss'"),
    ("{'MyLoss': MyLoss}", "dict {'MyLoss': <class 'single_plugin.MyLoss'>}"),
    ('42', 'int 42'),
])
def test_hook_returning_something_else_than_a_list_names_the_plugin_and_the_fix(python, tmp_path, returned, shown):
    result = build_with_a_hook_returning(python, tmp_path, returned)
    assert result.returncode != 0
    assert "PluginError: kdplug plugin 'single' (single, single_plugin)" in result.stderr, result.stderr
    assert f'its hook kdplug_losses() returned {shown}, not a list of classes' in result.stderr, result.stderr
    assert 'Return a list, e.g. `return [MyLoss]`' in result.stderr


@pytest.mark.parametrize('code, message', [
    # exit code 0 at import: the process ended as if all went well, without a word
    ('import sys\nsys.exit(0)', "plugin 'quitter' from the distribution quitter 1.0 called sys.exit (exit code 0)"),
    ('''
        import sys
        from kdplug import hookimpl
        @hookimpl
        def kdplug_losses():
            sys.exit(3)''', "plugin 'quitter' (quitter 1.0): its hook kdplug_losses() called sys.exit (exit code 3)"),
])
def test_plugin_calling_sys_exit_is_an_error_not_a_silent_exit(python, tmp_path, code, message):
    fake_distribution(tmp_path, 'quitter', code)
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert result.returncode != 0 and result.stdout == ''
    assert 'Traceback' in result.stderr and f'kdplug.plugins.PluginError: kdplug {message}' in result.stderr, \
        result.stderr
    assert 'KDPLUG_BLOCK_PLUGINS=quitter' in result.stderr and 'KDPLUG_DISABLE_PLUGIN_AUTOLOAD=1' in result.stderr


def test_unknown_name_in_block_plugins_is_an_error_with_close_matches(python, tmp_path):
    fake_distribution(tmp_path, 'broken', 'import not_a_module_anywhere')
    env = {'PYTHONPATH': str(tmp_path)}
    # typos of an entry-point name and of a builtin plugin name (its package instead of its plugin module)
    result = python(BUILD_KD, env={**env, 'KDPLUG_BLOCK_PLUGINS': 'brokn,kdplug.losses'})
    assert "PluginError: KDPLUG_BLOCK_PLUGINS=brokn,kdplug.losses names no kdplug plugin 'brokn', " \
           "'kdplug.losses'" in result.stderr, result.stderr
    assert "'brokn': did you mean 'broken'?" in result.stderr
    assert "'kdplug.losses': did you mean 'kdplug.losses.plugin'" in result.stderr
    assert 'the builtins kdplug.losses.plugin, kdplug.distillers.plugin' in result.stderr
    assert 'failed to import' not in result.stderr  # the typo is reported, before the plugin it missed is loaded
    # without autoload, installed plugins are still known by name (discovered, not loaded): a typo is still an error
    no_autoload = {**env, 'KDPLUG_DISABLE_PLUGIN_AUTOLOAD': '1'}
    result = python(BUILD_KD, env={**no_autoload, 'KDPLUG_BLOCK_PLUGINS': 'brokn'})
    assert "names no kdplug plugin 'brokn'" in result.stderr and "did you mean 'broken'" in result.stderr
    assert python(BUILD_KD, env={**no_autoload, 'KDPLUG_BLOCK_PLUGINS': 'broken'}).stdout.strip() == 'KDLoss'


def test_misspelled_hook_is_an_error_at_load(python, tmp_path):
    fake_distribution(tmp_path, 'typo', '''
        from kdplug import hookimpl
        @hookimpl
        def kdplug_loss():
            return []''')
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert "kdplug plugin 'typo' (typo)" in result.stderr
    assert 'kdplug_loss' in result.stderr and 'kdplug_losses' in result.stderr


ONE_LOSS = '''
    from torch import nn
    from kdplug import hookimpl
    class {name}Loss(nn.Module):
        pass
    @hookimpl
    def kdplug_losses():
        return [{name}Loss]'''


@pytest.mark.parametrize('code, entry_points, message', [
    # pluggy registered both silently: the plugin was listed with no contributions, its loss "not installed"
    ('def kdplug_losses():\n    return []', None,
     "kdplug plugin 'nohook' (nohook, nohook_plugin) contributes nothing: its functions kdplug_losses are not marked "
     'as hooks: decorate each with @hookimpl'),
    (ONE_LOSS.format(name='My'), 'nohook = nohook_plugin:kdplug_losses',
     "kdplug plugin 'nohook' (nohook, nohook_plugin:kdplug_losses) contributes nothing: its entry point names the "
     "object nohook_plugin:kdplug_losses, not a module: name the "
     'module that holds the @hookimpl functions (nohook_plugin)'),
    # pluggy's own PluginValidationError, which named neither the distribution nor a fix
    ('from kdplug import hookimpl\n@hookimpl\ndef kdplug_losses(config):\n    return []', None,
     "kdplug plugin 'nohook' (nohook, nohook_plugin): Plugin 'nohook' for hook 'kdplug_losses'"),
])
def test_a_plugin_without_usable_hooks_is_an_error_naming_it(python, tmp_path, code, entry_points, message):
    fake_distribution(tmp_path, 'nohook', code, entry_points=entry_points)
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert result.returncode != 0 and f'PluginError: {message}' in result.stderr, result.stderr
    if 'config' in code:
        assert 'every kdplug hook takes none' in result.stderr and 'KDPLUG_BLOCK_PLUGINS=nohook' in result.stderr


def test_one_entry_point_name_in_two_distributions_names_both(python, tmp_path):
    fake_distribution(tmp_path, 'first', ONE_LOSS.format(name='First'), entry_point='shared')
    fake_distribution(tmp_path, 'second', ONE_LOSS.format(name='Second'), entry_point='shared')
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert "two distributions declare the kdplug plugin (entry point) 'shared' in group \"kdplug\": " in result.stderr
    assert 'first (first_plugin)' in result.stderr and 'second (second_plugin)' in result.stderr, result.stderr


def test_two_entry_points_of_one_module_are_named(python, tmp_path):
    fake_distribution(tmp_path, 'twice', ONE_LOSS.format(name='Twice'),
                      entry_points='twice = twice_plugin\ntwice_more = twice_plugin')
    result = python(BUILD_KD, env={'PYTHONPATH': str(tmp_path)})
    assert "the entry points 'twice' and 'twice_more' of twice both name twice_plugin" in result.stderr, result.stderr


def test_list_plugins_reports_a_clash_and_the_plugins_it_skips(tmp_path):
    """It listed both classes of a name clash, exit status 0, while every run refused them."""
    fake_distribution(tmp_path, 'clashing', ONE_LOSS.format(name='KD'))
    tool = [sys.executable, str(REPO / 'tools' / 'list_plugins.py')]
    env = {**os.environ, 'PYTHONPATH': str(tmp_path)}
    result = subprocess.run(tool, capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    assert "kdplug-list-plugins: name clash in the kdplug::model registry: 'KDLoss' from plugin 'clashing'" in \
        result.stderr
    for switch, why in (('KDPLUG_BLOCK_PLUGINS', 'KDPLUG_BLOCK_PLUGINS names it'),
                        ('KDPLUG_DISABLE_PLUGIN_AUTOLOAD', 'KDPLUG_DISABLE_PLUGIN_AUTOLOAD is set')):
        result = subprocess.run(tool, capture_output=True, text=True, cwd=REPO, env={**env, switch: 'clashing'})
        assert result.returncode == 0 and f'clashing  skipped: {why}' in result.stdout, result.stderr
    # and a lookup that fails says the plugin is installed but skipped, not "appears once installed"
    lookup = subprocess.run([sys.executable, '-c', "from kdplug.registry import MODELS; MODELS.get('x'); "
                             "MODELS.build(dict(type='NoSuchLoss'))"], capture_output=True, text=True,
                            env={**env, 'KDPLUG_BLOCK_PLUGINS': 'clashing'})
    assert "The installed plugin 'clashing' is not loaded: KDPLUG_BLOCK_PLUGINS names it." in lookup.stderr


def test_list_plugins_tool_shows_contributions(python):
    result = subprocess.run([sys.executable, str(REPO / 'tools' / 'list_plugins.py')], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert 'kdplug.losses.plugin  [kdplug' in result.stdout
    assert 'kdplug_losses: KDLoss, DKDLoss, NKDLoss, NormKDLoss, MultiTempKDLoss' in result.stdout
    for argv, code, said in ((['--help'], 0, 'Print every kdplug plugin'), (['--bogus'], 2, 'unrecognized')):
        result = subprocess.run([sys.executable, str(REPO / 'tools' / 'list_plugins.py'), *argv], capture_output=True,
                                text=True, cwd=REPO)
        assert result.returncode == code and said in result.stdout + result.stderr, argv


@pytest.fixture
def installed_example_plugin(tmp_path):
    """pip-installed into a folder of its own (a copy the user installed stays as it was), first on PYTHONPATH."""
    return pip_install_to(tmp_path / 'site', REPO / 'examples' / 'kdplug-example-plugin')


def test_third_party_plugin_loss_builds_by_name_after_pip_install(python, installed_example_plugin, tmp_path):
    config = tmp_path / 'reverse_kd.py'
    config.write_text("losses = dict(rkd=dict(type='ReverseKDLoss', temperature=2.0, loss_weight=0.5))\n")
    result = python(textwrap.dedent(f'''
        import torch
        from mmengine.config import Config
        from mmengine.registry import MODELS as ROOT
        from kdplug.registry import MODELS
        from kdplug.plugins import format_plugins
        cfg = Config.fromfile({str(config)!r})
        loss = MODELS.build(cfg.losses.rkd)
        x = torch.randn(4, 10)
        print(type(loss).__module__, float(loss(x, x)), type(ROOT.build(dict(type='kdplug.ReverseKDLoss'))).__name__)
        print(format_plugins())'''), env=installed_example_plugin)
    assert result.returncode == 0, result.stderr
    first, *table = result.stdout.splitlines()
    assert first == 'kdplug_example.reverse_kd 0.0 ReverseKDLoss'
    assert 'example  [kdplug-example-plugin 0.1.0]  (kdplug_example.plugin)' in table
    assert '    kdplug_losses: ReverseKDLoss' in table
