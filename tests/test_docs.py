"""The documentation site (docs/conf.py: the markdown pages through myst-parser, the API reference through autodoc)
builds with warnings as errors, as CI builds it: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip('sphinx', reason='the docs build needs the docs extra: pip install -e .[docs]')
pytest.importorskip('myst_parser', reason='the docs build needs the docs extra: pip install -e .[docs]')

DOCS = REPO / 'docs'


def sphinx_build(source, out, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith('KDPLUG_')}
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
                           '-d', str(out / 'doctrees'), str(source), str(out / 'html')],
                          env=env, cwd=out, capture_output=True, text=True, timeout=timeout)


def test_docs_build_with_warnings_as_errors(tmp_path):
    result = sphinx_build(DOCS, tmp_path)
    assert result.returncode == 0, f'sphinx -W failed:\n{result.stdout}\n{result.stderr}'
    html = tmp_path / 'html'
    for page in ('index', 'get_started', 'losses', 'plugins', 'detection', 'letkd', 'design', 'benchmarks'):
        assert (html / f'{page}.html').is_file(), page
    # the API reference holds what autodoc found in the docstrings, not only the page titles
    expected = {
        'losses': ['kdplug.losses.kd.KDLoss', 'kdplug.losses.normkd.NormKDLoss', 'kdplug.losses.functional'],
        'registry': ['kdplug.registry.PluginRegistry', 'kdplug.registry.MODELS'],
        'plugins': ['kdplug.plugins.load_plugins', 'kdplug.hookspecs.kdplug_losses', 'kdplug.hookspecs.kdplug_tasks'],
        'distillers': ['kdplug.distillers.distiller.Distiller'],
        'tasks': ['kdplug.tasks.base.Task', 'kdplug.tasks.detection.TwoStageDetectionTask'],
        'teachers': ['kdplug.teachers.base.TeacherSource', 'kdplug.teachers.ema.EMATeacher'],
        'engine': ['kdplug.engine.hooks.AtomicCheckpointHook', 'kdplug.engine.checkpoint.allow_mmengine_checkpoints'],
        'transforms': ['kdplug.transforms.cached_load.CachedLoadImageFromFile',
                       'kdplug.transforms.checked_load.CheckedLoadImageFromFile'],
        'models': ['kdplug.models.cifar.ResNet8', 'kdplug.models.student_modules'],
        'letkd': ['kdplug.letkd.layer.LetKDLayer', 'kdplug.letkd.loss.LetKDPenultimateLoss',
                  'kdplug.letkd.loss.LetKDIntermediateLoss', 'kdplug.letkd.codewords.kmeans',
                  'kdplug.letkd.fitting.fit_codewords', 'kdplug.letkd.io'],
    }
    for page, anchors in expected.items():
        text = (html / 'api' / f'{page}.html').read_text(encoding='utf-8')
        missing = [a for a in anchors if f'id="{a}"' not in text and f'id="module-{a}"' not in text]
        assert not missing, f'api/{page}.html lacks {missing}'
    # a link to a repository file outside docs/ is kept as its text
    assert 'configs/detection/' in (html / 'detection.html').read_text(encoding='utf-8')


def test_docs_conf_lets_only_links_into_the_repository_pass(tmp_path):
    """docs/conf.py silences myst's warning for links to repository files outside docs/ (configs/, examples/...);
    a broken link between pages, or to a missing heading, still fails the -W build."""
    def site(body):
        source = tmp_path / 'site' / 'docs'
        shutil.rmtree(source.parent, ignore_errors=True)
        source.mkdir(parents=True)
        shutil.copy(DOCS / 'conf.py', source / 'conf.py')
        (source / 'index.md').write_text('# Index\n\n```{toctree}\npage\n```\n')
        (source / 'page.md').write_text(f'# Page\n\n## A heading\n\n{body}\n')
        # an existing file (myst names it by its absolute path) and a folder that is not there (by the link's text)
        (source.parent / 'configs' / 'detection').mkdir(parents=True)
        (source.parent / 'configs' / 'detection' / 'README.md').write_text('# Detection configs\n')
        return source

    good = '[configs](../configs/detection/README.md), [example](../examples/kdplug-example-plugin), [h](#a-heading)'
    result = sphinx_build(site(good), tmp_path / 'good')
    assert result.returncode == 0, f'{result.stdout}\n{result.stderr}'
    for broken in ('[page](no-such-page.md)', '[heading](index.md#no-such-heading)'):
        result = sphinx_build(site(broken), tmp_path / broken.split('(')[0].strip('[]'))
        assert result.returncode != 0 and 'myst.xref_missing' in result.stderr, (broken, result.stderr)


def test_every_module_of_kdplug_is_in_the_api_reference():
    """A new module (a loss, a distiller...) needs its ``.. automodule::`` line in one of docs/api/*.rst."""
    modules = {'.'.join(path.relative_to(REPO).with_suffix('').parts).removesuffix('.__init__')
               for path in (REPO / 'kdplug').rglob('*.py')}
    documented = {line.split('::', 1)[1].strip() for page in (DOCS / 'api').glob('*.rst')
                  for line in page.read_text().splitlines() if line.startswith('.. automodule::')}
    assert not sorted(modules - documented), 'add these modules to a page of docs/api/'
    assert not sorted(documented - modules), 'docs/api/ documents modules that do not exist'
