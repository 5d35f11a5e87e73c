"""kdplug as a library: the wheel built from the package files alone, installed into a folder of its own and used
from a process that has neither the source tree nor the editable install of this environment on its path."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip('setuptools', reason='building the wheel needs setuptools (the build backend of pyproject.toml)')
pytest.importorskip('pip', reason='building and installing the wheel needs pip')

#: What building the wheel reads: the package and its metadata (setup.cfg reads README.md as long description).
SOURCES = ('pyproject.toml', 'setup.cfg', 'README.md', 'LICENSE', 'kdplug')


def pip(*args, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f'pip {" ".join(args)}:\n{result.stdout}\n{result.stderr}'
    return result


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(wheel, target): the wheel built from a copy of the sources (a build writes build/ and *.egg-info beside
    them, never into the checkout), installed with ``pip install --no-deps --target``."""
    root = tmp_path_factory.mktemp('wheel')
    src = root / 'src'
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        elif (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    # no build isolation: the build tools of this environment (setuptools, wheel), nothing downloaded
    pip('wheel', '--no-deps', '--no-build-isolation', '--no-index', '-w', str(root / 'dist'), str(src), cwd=root)
    wheels = sorted((root / 'dist').glob('kdplug-*.whl'))
    assert len(wheels) == 1, wheels
    target = root / 'target'
    pip('install', '--no-deps', '--no-index', '--target', str(target), str(wheels[0]), cwd=root)
    return wheels[0], target


def test_the_wheel_holds_the_package_and_its_type_marker(installed):
    wheel, target = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert 'kdplug/py.typed' in names
    assert {'kdplug/__init__.py', 'kdplug/registry.py', 'kdplug/plugins.py', 'kdplug/losses/kd.py',
            'kdplug/losses/functional.py', 'kdplug/distillers/distiller.py', 'kdplug/engine/hooks.py',
            'kdplug/models/cifar.py', 'kdplug/transforms/cached_load.py', 'kdplug/tasks/classification.py',
            'kdplug/tasks/detection.py', 'kdplug/teachers/checkpoint.py', 'kdplug/teachers/ema.py',
            'kdplug/teachers/weak_head.py', 'kdplug/letkd/layer.py', 'kdplug/letkd/loss.py',
            'kdplug/letkd/codewords.py', 'kdplug/letkd/fitting.py', 'kdplug/letkd/io.py', 'kdplug/letkd/plugin.py',
            'kdplug/tools/fit_codewords.py'} <= names
    # a library, not the repository: none of its tools, configs or tests
    assert not [n for n in names if n.split('/')[0] in ('tools', 'configs', 'tests', 'docs', 'examples')]
    entry_points = next(n for n in names if n.endswith('.dist-info/entry_points.txt'))
    with zipfile.ZipFile(wheel) as archive:
        assert 'kdplug-list-plugins = kdplug.plugins:main' in archive.read(entry_points).decode()
    assert (target / 'kdplug' / 'py.typed').is_file()


USE = r'''
import importlib.metadata as metadata, json, os, sys
from pathlib import Path

target, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
given = {Path(p).resolve() for p in os.environ['PYTHONPATH'].split(os.pathsep)}


def in_checkout(path):  # the source tree, or a folder of it other than those given (.venv's site-packages)
    return path == repo or (path.is_relative_to(repo) and path not in given)


import torch
import kdplug
from kdplug.registry import MODELS
from kdplug.plugins import format_plugins, plugin_infos

# the registry builds a loss, which computes
loss = MODELS.build(dict(type='NormKDLoss', t_norm=2.0, loss_weight=0.5))
torch.manual_seed(0)
student, teacher = torch.randn(8, 10, requires_grad=True), torch.randn(8, 10)
value = loss(student, teacher, torch.arange(8) % 10)
value.backward()
# as a config of another OpenMMLab package names it: mmengine's root registry, the kdplug scope
from mmengine.registry import MODELS as ROOT_MODELS
scoped = ROOT_MODELS.build(dict(type='kdplug.KDLoss', temperature=4.0))
# the distiller, its task and a teacher source that needs no file, in mmpretrain's models
distiller = MODELS.build(dict(
    type='Distiller', task=dict(type='ClassificationTask'), teacher=dict(type='EMATeacher', xi=0.9),
    student=dict(type='ImageClassifier', backbone=dict(type='kdplug.ResNet8'), neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead', num_classes=10, in_channels=64)),
    losses=dict(kd=dict(type='KDLoss'))))
distiller.eval()
with torch.no_grad():
    distilled = list(distiller(torch.randn(2, 3, 32, 32)).shape)
infos = plugin_infos()
print(json.dumps(dict(
    kdplug_file=kdplug.__file__,
    modules={n: getattr(m, '__file__', None) for n, m in sys.modules.items() if n.split('.')[0] == 'kdplug'},
    metadata_file=str(metadata.distribution('kdplug').locate_file('kdplug/__init__.py')),
    metadata_version=metadata.version('kdplug'), version=kdplug.__version__,
    repo_on_path=[p for p in sys.path if in_checkout(Path(p or '.').resolve())],
    loss=type(loss).__name__, value=value.item(), grad=bool(torch.isfinite(student.grad).all()),
    scoped=f'{type(scoped).__module__}.{type(scoped).__name__}',
    distiller=[f'{type(m).__module__}.{type(m).__name__}' for m in (distiller, distiller.task, distiller.teacher)],
    distilled=distilled,
    plugins=[i.name for i in infos], table=format_plugins(),
    weights_only_allowed='HistoryBuffer' in str(torch.serialization.get_safe_globals()))))
'''


def run_outside_the_tree(target: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    """This environment's interpreter without its site hooks (-S: no .pth file, so no editable kdplug), with the
    wheel's folder first on the path and then the environment's site-packages (torch, mmengine, mmpretrain)."""
    site = dict.fromkeys([sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']])
    env = {k: v for k, v in os.environ.items() if not k.startswith('KDPLUG_') and k != 'PYTHONPATH'}
    env['PYTHONPATH'] = os.pathsep.join([str(target), *site])
    return subprocess.run([sys.executable, '-S', *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_installed_wheel_builds_computes_and_loads_its_plugins(installed, tmp_path):
    _, target = installed
    result = run_outside_the_tree(target, tmp_path, '-c', USE, str(target), str(REPO))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    target = target.resolve()
    assert Path(out['kdplug_file']).resolve().is_relative_to(target), out['kdplug_file']
    # every kdplug module that ran is the wheel's (not the checkout's through the editable install)
    elsewhere = {n: f for n, f in out['modules'].items() if f and not Path(f).resolve().is_relative_to(target)}
    assert not elsewhere
    assert Path(out['metadata_file']).resolve().is_relative_to(target)
    assert out['metadata_version'] == out['version']
    assert not out['repo_on_path']
    assert out['loss'] == 'NormKDLoss' and out['value'] > 0 and out['grad']
    assert out['scoped'] == 'kdplug.losses.kd.KDLoss'
    assert out['distiller'] == ['kdplug.distillers.distiller.Distiller', 'kdplug.tasks.classification.'
                                'ClassificationTask', 'kdplug.teachers.ema.EMATeacher']
    assert out['distilled'] == [2, 10]
    assert {'kdplug.losses.plugin', 'kdplug.distillers.plugin', 'kdplug.tasks.plugin', 'kdplug.teachers.plugin',
            'kdplug.engine.plugin', 'kdplug.models.plugin', 'kdplug.letkd.plugin',
            'kdplug.transforms.plugin'} <= set(out['plugins'])
    for name in ('NormKDLoss', 'Distiller', 'ClassificationTask', 'TwoStageDetectionTask', 'CheckpointTeacher',
                 'EMATeacher', 'WeakHeadTeacher', 'AtomicCheckpointHook', 'ResNet8', 'CachedLoadImageFromFile',
                 'LetKDLayer', 'LetKDPenultimateLoss', 'LetKDIntermediateLoss'):
        assert name in out['table']
    assert out['weights_only_allowed']  # loading the plugins set torch's allow-list for mmengine checkpoints


def test_the_console_script_of_the_wheel_lists_the_plugins(installed, tmp_path):
    _, target = installed
    script = target / 'bin' / 'kdplug-list-plugins'
    assert script.is_file()
    result = run_outside_the_tree(target, tmp_path, str(script))
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'kdplug.losses.plugin' in result.stdout and 'NormKDLoss' in result.stdout


@pytest.mark.parametrize('script, usage', [('kdplug-train', 'usage: kdplug-train'),
                                           ('kdplug-test', 'usage: kdplug-test'),
                                           ('kdplug-export-student', 'usage: kdplug-export-student'),
                                           ('kdplug-fit-codewords', 'usage: kdplug-fit-codewords')])
def test_the_main_tools_come_with_the_installed_wheel(installed, tmp_path, script, usage):
    """train, test, export and fit_codewords from an installed kdplug: console scripts and
    ``python -m kdplug.tools.<tool>``."""
    _, target = installed
    result = run_outside_the_tree(target, tmp_path, str(target / 'bin' / script), '--help')
    assert result.returncode == 0 and usage in result.stdout, result.stdout + result.stderr
    module = 'kdplug.tools.' + script[len('kdplug-'):].replace('-', '_')
    result = run_outside_the_tree(target, tmp_path, '-m', module, '--help')
    assert result.returncode == 0 and 'usage:' in result.stdout, result.stdout + result.stderr
