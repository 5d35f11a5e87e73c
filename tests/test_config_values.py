"""The configs' hyper-parameters against their sources, loaded as a user's run loads them (mmengine's Config.fromfile).

The expected values are written here from the sources, not read from the configs:

* DKD + NormKD: the authors' gizi1/NormKD (commit 279371b), configs/cifar100/NormKD_DKD/<pair>.yaml (alpha, beta;
  t_norm 2, CE weight 1 and warm-up 20 are the defaults of their mdistiller/engine/cfg.py) and
  configs/imagenet/r34_r18/dkd_normkd.yaml (alpha 1, beta 1, t_norm 0.5, CE weight 1, warm-up 1).
* NormKD: section 4.3 of Chi et al., "NormKD: Normalized Logits for Knowledge Distillation", arXiv:2308.00520
  (CIFAR t_norm 2, w_ce 0.1, w_kd 0.9; ImageNet t_norm 1, 0.5, 0.5; the ImageNet recipe), the same in the authors'
  files.
* NKD: the authors' yzd-v/cls_KD configs/distillers/cifar100/res34_distill_res18_cifar.py (T 3, gamma 3.5) and
  configs/distillers/imagenet/res34_distill_res18_img.py (T 1, gamma 1.5), CE weight 1.
* DKD + logit standardization: the authors' sunshangquan/logit-standardization-KD (commit f6e5aa5), the DKD log of
  each pair linked from their README (named dkd,<teacher>,<student>,<base T>,<w_kd>[,<DKD beta>]) read through their
  tools/train.py lines 115-118 (alpha = 1 x w_kd, beta = DKD beta x w_kd; mdistiller's beta 8 for resnet32x4).
* Evaluation: the papers report the best top-1 over all epochs, so every classification config validates after
  every epoch.
"""
from pathlib import Path

import pytest
from mmengine.config import Config

from conftest import REPO

CONFIGS = REPO / 'configs'

# pair: (alpha, beta, t_norm), the authors' CIFAR-100 file of the pair; every dataset of a pair takes these
DKD_NORMKD = {
    'resnet32x4_resnet8x4': (4.0, 5.0, 2.0),  # res32x4_res8x4.yaml
    'resnet56_resnet20': (7.0, 2.0, 2.0),  # res56_res20.yaml
    'wrn40_2_wrn16_2': (4.0, 5.0, 2.0),  # wrn40_2_wrn_16_2.yaml
    'wrn40_2_wrn40_1': (3.0, 6.0, 2.0),  # wrn40_2_wrn_40_1.yaml
}
DKD_NORMKD_IMAGENET = (1.0, 1.0, 0.5)  # configs/imagenet/r34_r18/dkd_normkd.yaml
# pair: (alpha, beta, base temperature) of the authors' DKD + LS log of the pair
DKD_LS = {
    'resnet32x4_resnet8x4': (9.0, 72.0, 2.0),  # dkd,resnet32x4,resnet8x4,2,9.txt
    'resnet56_resnet20': (18.0, 36.0, 3.0),  # dkd,resnet56,resnet20,3,18,2.0.txt
    'wrn40_2_wrn16_2': (12.0, 24.0, 2.0),  # dkd,wrn_40_2,wrn_16_2,2,12,2.0.txt
    'wrn40_2_wrn40_1': (12.0, 24.0, 2.0),  # dkd,wrn_40_2,wrn_40_1,2,12,2.0.txt
}


def load(path: Path) -> Config:
    return Config.fromfile(str(path))


def configs_of(method: str, imagenet: bool) -> list:
    found = sorted(p for p in (CONFIGS / method).glob(f'{method}_*.py') if ('in1k' in p.name) == imagenet)
    assert found, f'no {method} configs'
    return found


def pair_of(path: Path, method: str) -> str:
    pairs = [pair for pair in DKD_NORMKD if path.stem.startswith(f'{method}_{pair}_')]
    assert len(pairs) == 1, f'{path.name}: no pair of the table'
    return pairs[0]


def ce_weight(cfg: Config) -> float:
    """The student's own cross-entropy weight (mmpretrain's CrossEntropyLoss default: 1)."""
    return cfg.model.student.get('head', {}).get('loss', {}).get('loss_weight', 1.0)


def warmup_epochs(cfg: Config, loss: str):
    hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'kdplug.LossWarmupHook' and loss in h['losses']]
    assert len(hooks) <= 1
    return hooks[0]['warmup'] if hooks else None


def rel(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


@pytest.mark.parametrize('path', configs_of('dkd-normkd', imagenet=False), ids=rel)
def test_dkd_normkd_cifar_and_tiny_imagenet_take_the_authors_values_of_their_pair(path):
    cfg = load(path)
    alpha, beta, t_norm = DKD_NORMKD[pair_of(path, 'dkd-normkd')]
    dkd = cfg.model.losses.dkd
    assert (dkd.type, dkd.alpha, dkd.beta, dkd.t_norm) == ('DKDLoss', alpha, beta, t_norm)
    assert dkd.get('temperature') is None and dkd.get('logit_norm') is None
    assert dkd.get('loss_weight', 1.0) == 1.0
    assert ce_weight(cfg) == 1.0
    assert warmup_epochs(cfg, 'dkd') == 20


@pytest.mark.parametrize('path', configs_of('dkd-ls', imagenet=False), ids=rel)
def test_dkd_ls_takes_the_values_of_the_authors_run_of_its_pair(path):
    """Not DKD's per-pair values times 9: three of the four pairs ran with other weights and temperatures."""
    cfg = load(path)
    alpha, beta, temperature = DKD_LS[pair_of(path, 'dkd-ls')]
    dkd = cfg.model.losses.dkd
    assert (dkd.type, dkd.alpha, dkd.beta, dkd.temperature, dkd.logit_norm) == \
        ('DKDLoss', alpha, beta, temperature, 'zscore')
    assert dkd.get('loss_weight', 1.0) == 1.0 and ce_weight(cfg) == 1.0
    assert warmup_epochs(cfg, 'dkd') == 20


@pytest.mark.parametrize('path', [p for p in sorted(CONFIGS.rglob('*_240e_*.py')) if '_base_' not in p.parts], ids=rel)
def test_the_240_epoch_recipes_use_the_momentum_of_the_authors_trainers(path):
    """Plain momentum as mdistiller's trainer (and the LS, CTKD, MLKD and cls_KD code) builds SGD; Nesterov for
    letKD, whose supplement (section 2.2) says so."""
    optimizer = load(path).optim_wrapper.optimizer
    assert (optimizer.type, optimizer.momentum, optimizer.nesterov) == ('SGD', 0.9, path.parent.name == 'letkd')


def test_every_pair_of_the_authors_has_a_cifar100_dkd_normkd_config():
    for pair in DKD_NORMKD:
        assert (CONFIGS / 'dkd-normkd' / f'dkd-normkd_{pair}_240e_cifar100.py').is_file(), pair


def imagenet_recipe(cfg: Config) -> None:
    """NormKD section 4.3 (and the authors' r34_r18 files): batch 512, SGD momentum 0.9, lr 0.2 / 10 at 30, 60, 90,
    weight decay 1e-4, 100 epochs. 128 per GPU on the authors' 4 GPUs; --auto-scale-lr scales from 512. Plain
    momentum: section 4.3 says Nesterov, the authors' mdistiller/engine/trainer.py builds SGD without it."""
    assert cfg.train_dataloader.batch_size * 4 == 512
    assert cfg.train_dataloader.dataset.type == 'ImageNet'  # the batch size overrides, the dataset stays
    assert cfg.auto_scale_lr.base_batch_size == 512
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.nesterov, optimizer.weight_decay) == \
        ('SGD', 0.2, 0.9, False, 1e-4)
    scheduler = cfg.param_scheduler
    assert (scheduler.type, scheduler.milestones, scheduler.gamma, scheduler.by_epoch) == \
        ('MultiStepLR', [30, 60, 90], 0.1, True)
    assert (cfg.train_cfg.max_epochs, cfg.train_cfg.val_interval) == (100, 1)


def test_dkd_normkd_imagenet_takes_the_authors_values_and_recipe():
    (path,) = configs_of('dkd-normkd', imagenet=True)
    cfg = load(path)
    dkd = cfg.model.losses.dkd
    assert (dkd.alpha, dkd.beta, dkd.t_norm) == DKD_NORMKD_IMAGENET
    assert dkd.get('temperature') is None and dkd.get('loss_weight', 1.0) == 1.0
    assert ce_weight(cfg) == 1.0
    assert warmup_epochs(cfg, 'dkd') == 1
    imagenet_recipe(cfg)


@pytest.mark.parametrize('path', configs_of('normkd', imagenet=False), ids=rel)
def test_normkd_cifar_and_tiny_imagenet_take_the_papers_cifar_values(path):
    cfg = load(path)
    normkd = cfg.model.losses.normkd
    assert (normkd.type, normkd.t_norm, normkd.loss_weight) == ('NormKDLoss', 2.0, 0.9)
    assert ce_weight(cfg) == 0.1


def test_normkd_imagenet_takes_the_papers_values_and_recipe():
    (path,) = configs_of('normkd', imagenet=True)
    cfg = load(path)
    normkd = cfg.model.losses.normkd
    assert (normkd.t_norm, normkd.loss_weight) == (1.0, 0.5)
    assert ce_weight(cfg) == 0.5
    imagenet_recipe(cfg)


@pytest.mark.parametrize('path', configs_of('nkd', imagenet=False), ids=rel)
def test_nkd_cifar_and_tiny_imagenet_take_the_authors_cifar_values(path):
    cfg = load(path)
    nkd = cfg.model.losses.nkd
    assert (nkd.type, nkd.temperature, nkd.gamma, nkd.get('loss_weight', 1.0)) == ('NKDLoss', 3.0, 3.5, 1.0)
    assert nkd.get('t_norm') is None
    assert ce_weight(cfg) == 1.0


def test_nkd_imagenet_takes_the_authors_values():
    (path,) = configs_of('nkd', imagenet=True)
    cfg = load(path)
    nkd = cfg.model.losses.nkd
    assert (nkd.temperature, nkd.gamma, nkd.get('loss_weight', 1.0)) == (1.0, 1.5, 1.0)
    assert ce_weight(cfg) == 1.0


def classification_configs() -> list:
    return sorted(p for p in CONFIGS.rglob('*.py') if '_base_' not in p.parts and 'detection' not in p.parts)


def test_every_classification_config_validates_after_every_epoch():
    """Best-over-epochs needs every epoch: the CIFAR / Tiny-ImageNet 240- and 30-epoch schedules, the demo's, and
    ImageNet's."""
    checked, schedules = {}, set()
    for path in classification_configs():
        train_cfg = load(path).train_cfg
        checked[rel(path)] = (train_cfg.get('by_epoch', True), train_cfg.get('val_interval', 1))
        schedules.add(train_cfg.max_epochs)
    assert {name: value for name, value in checked.items() if value != (True, 1)} == {}
    assert {4, 30, 100, 240} <= schedules, schedules


@pytest.mark.parametrize('schedule', ['cifar_240e.py', 'cifar_30e.py', 'cifar_short.py', 'imagenet_100e_bs512.py'])
def test_the_base_schedules_validate_after_every_epoch(schedule):
    assert load(CONFIGS / '_base_' / 'schedules' / schedule).train_cfg.val_interval == 1


@pytest.mark.parametrize('method, temperature, logit_norm, w_kd, w_ce', [
    ('kd', 1.0, None, 0.5, 0.5),  # megvii-research/mdistiller configs/imagenet/r34_r18/kd.yaml
    ('kd-ls', 2.0, 'zscore', 9.0, 1.0),  # the LS authors' command: their kd.yaml (CE 1) --base-temp 2 --kd-weight 9
])
def test_kd_and_kd_ls_imagenet_take_the_authors_values_and_recipe(method, temperature, logit_norm, w_kd, w_ce):
    (path,) = configs_of(method, imagenet=True)
    cfg = load(path)
    kd = cfg.model.losses.kd
    assert (kd.type, kd.temperature, kd.get('logit_norm'), kd.loss_weight) == ('KDLoss', temperature, logit_norm, w_kd)
    assert ce_weight(cfg) == w_ce
    imagenet_recipe(cfg)
