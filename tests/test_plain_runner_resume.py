"""A kdplug config run by OpenMMLab's own tools resumes under torch's ``weights_only=True`` default.

mmpretrain's / mmdet's ``tools/train.py`` is ``Config.fromfile`` + ``Runner.from_cfg`` + ``train()``: no kdplug tool
sets torch's allow-list for mmengine checkpoints there. kdplug's registry does, when it loads the plugins (the first
lookup of a kdplug component, in ``Runner.from_cfg``), before mmengine's resume calls ``torch.load``. Each run here
is a fresh interpreter doing only that, so nothing earlier in the test session has set the allow-list."""
import json

import pytest

from runner_helpers import EMA_CONFIG, run_config

#: A user's train.py (after ``CONFIG = <path>``), reduced to what mmengine does; prints what it saw as JSON.
PLAIN_TRAIN = r'''
import json, pickle, sys
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.runner import Runner

cfg = Config.fromfile(CONFIG)
seen = dict(kdplug_before_runner=sorted(m for m in sys.modules if m.split('.')[0] == 'kdplug'),
            allowed_before_runner='HistoryBuffer' in str(torch.serialization.get_safe_globals()))
if cfg.get('resume'):
    # what the resume will load, through torch's default (weights_only=True) without kdplug's allow-list
    checkpoint = (Path(cfg.work_dir) / 'last_checkpoint').read_text().strip()
    try:
        torch.load(checkpoint, map_location='cpu')
        seen['plain_torch_load'] = 'loaded'
    except pickle.UnpicklingError as err:
        seen['plain_torch_load'] = f'refused: {str(err).splitlines()[0]}'
runner = Runner.from_cfg(cfg)
runner.train()
seen.update(iter=runner.iter, allowed_after='HistoryBuffer' in str(torch.serialization.get_safe_globals()))
print(json.dumps(seen))
'''


def run_plain(python, cfg, path):
    cfg.dump(str(path))
    result = python(f'CONFIG = {str(path)!r}\n{PLAIN_TRAIN}', cwd=path.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout + result.stderr


# kd: the demo KD config (its teacher is loaded through kdplug's checkpoint loader too); ema: the EMA self-teacher,
# which loads no teacher file, so that the registry's plugin loading is the only thing that sets the allow-list
@pytest.mark.parametrize('model_from', [None, EMA_CONFIG], ids=['kd', 'ema'])
def test_plain_runner_resumes_a_kdplug_distillation_run(python, cifar10_root, teacher_checkpoint, tmp_path, model_from):
    work = tmp_path / 'work'

    def config(**options):
        return run_config(cifar10_root, work, teacher_checkpoint, model_from=model_from, **options)

    first, log = run_plain(python, config(max_iters=2), tmp_path / 'run_2.py')
    assert first['iter'] == 2 and 'resumed' not in log
    assert not first['kdplug_before_runner']  # only the config's lookups bring kdplug in
    assert (work / 'iter_2.pth').is_file() and (work / 'last_checkpoint').read_text().strip() == str(
        work / 'iter_2.pth')

    resumed, log = run_plain(python, config(max_iters=4, resume=True), tmp_path / 'run_4.py')
    # the run's checkpoint needs the allow-list: torch alone refuses it, as mmengine's resume would without kdplug
    assert not resumed['allowed_before_runner']
    assert resumed['plain_torch_load'].startswith('refused'), resumed['plain_torch_load']
    assert not resumed['kdplug_before_runner']
    assert 'resumed epoch: 0, iter: 2' in log, log[-3000:]
    assert resumed['iter'] == 4 and resumed['allowed_after']
    assert (work / 'iter_4.pth').is_file()
