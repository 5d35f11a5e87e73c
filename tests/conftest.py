import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The real images the tests read (a few CIFAR-10 and coco128 samples, each folder with its PROVENANCE.md): the
#: repository ships them, so the suite needs nothing beside the clone.
TEST_DATA = REPO / 'tests' / 'data'
NEEDS_DETECTION = 'needs mmdet and mmcv with compiled ops: bash tools/install.sh (full)'


def require_detection_stack(module_level: bool = False) -> None:
    """Skip (the calling test, or its whole module) unless mmdet and mmcv's compiled ops import, as after
    ``bash tools/install.sh`` (full); ``bash tools/install.sh classification`` has neither. With
    KDPLUG_TESTS_REQUIRE_DETECTION=1 (.ci/run) a missing detection stack fails instead of skipping."""
    try:
        import mmcv.ops  # noqa: F401
        import mmdet  # noqa: F401
    except ImportError as error:
        if os.environ.get('KDPLUG_TESTS_REQUIRE_DETECTION') == '1':
            raise
        pytest.skip(f'{NEEDS_DETECTION} ({error})', allow_module_level=module_level)


def pip_install_to(target: Path, package: Path) -> dict:
    """Install ``package`` into the folder ``target`` (``pip install --target``), not into this environment: a test
    must not replace, then uninstall, a copy the user installed. Returns the env that puts it first on the path of
    a fresh interpreter (:func:`run_python`); in this process, put ``target`` on sys.path.

    pip builds a local folder in place (its ``build/`` and ``*.egg-info``): it builds a copy beside ``target``, so
    the suite writes nothing into the clone."""
    copy = target.parent / f'{target.name}-source' / package.name
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns('build', '*.egg-info', '__pycache__'))
    package = copy
    subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q', 'install', '--no-deps',
                    '--no-build-isolation', '--no-index', '--target', str(target), str(package)], check=True)
    return {'PYTHONPATH': str(target)}


def run_python(code: str, env: dict = None, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter of this environment (import-time and plugin-discovery behaviour)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith('KDPLUG_')}
    full_env.update(env or {})
    return subprocess.run([sys.executable, '-c', code], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for modules of tiny tensors: on two cores, shared with other jobs, threads only cost."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def default_scope_as_found():
    """Each test leaves mmengine's default scope as it found it: a Runner sets it for the whole process
    (``init_default_scope``), and mmpretrain's inferencer builds its pipeline in whatever scope is current, so a
    detection test's mmdet scope would otherwise decide whether a later classification test passes."""
    from mmengine.registry import DefaultScope
    found = DefaultScope._instance_dict.copy()  # what DefaultScope.overwrite_default_scope restores, too
    yield
    DefaultScope._instance_dict = found


@pytest.fixture
def python():
    return run_python


@pytest.fixture(scope='session')
def teacher_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised resnet20 CIFAR-10 teacher, saved as a training run would (detection tests override it)."""
    from runner_helpers import save_teacher
    return save_teacher(tmp_path_factory.mktemp('teacher') / 'teacher.pth')


@pytest.fixture(scope='session')
def cifar10_root(tmp_path_factory):
    """Real CIFAR-10 images (tests/data/cifar10): 8 per class for training, 4 per class for testing."""
    from cifar10_data import make_cifar10_subset
    return make_cifar10_subset(tmp_path_factory.mktemp('cifar10'), {'train': 8, 'test': 4})
