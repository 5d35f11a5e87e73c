"""The keys of the sections mmengine's Runner builds (kdplug.tools.config_keys): a misspelt one stops the tools before
anything is built, with its place in the config and the closest key; every shipped config passes."""
import pytest
from mmengine.config import Config

from conftest import REPO, require_detection_stack
from runner_helpers import KD_CONFIG as CONFIG


def shipped_configs():
    return sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


@pytest.mark.parametrize('config', shipped_configs(), ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_every_shipped_config_fits_what_the_runner_builds(config, capsys):
    from kdplug.tools.config_keys import check_runner_keys
    if 'detection' in config.parts:
        require_detection_stack()
    check_runner_keys(Config.fromfile(str(config)))
    assert 'warning: the config key' not in capsys.readouterr().err


@pytest.mark.parametrize('options,message', [
    # mmengine: EpochBasedTrainLoop.__init__() got an unexpected keyword argument 'max_epoch', after the models
    ({'train_cfg.max_epoch': 1}, r"train_cfg.max_epoch: 'max_epoch' is not an option of EpochBasedTrainLoop. Did you "
                                 r"mean 'max_epochs'\? It takes: max_epochs, val_begin, val_interval"),
    ({'val_cfg.fp61': True}, r"val_cfg.fp61: .* ValLoop. Did you mean 'fp16'\?"),
    ({'train_dataloader.batchsize': 8}, r"train_dataloader.batchsize: .* Did you mean 'batch_size'\?"),
    ({'train_dataloader.sampler.shufle': True}, r"train_dataloader.sampler.shufle: .* DefaultSampler. Did you mean "
                                                r"'shuffle'\? It takes: shuffle, round_up"),
    ({'optim_wrapper.optimizer.momentun': 0.9}, r"optim_wrapper.optimizer.momentun: .* SGD. Did you mean 'momentum'"),
    ({'optim_wrapper.clipgrad': dict(max_norm=1)}, r"optim_wrapper.clipgrad: .* OptimWrapper. Did you mean "
                                                   r"'clip_grad'"),
    # mmengine's DefaultOptimWrapperConstructor reads the keys it knows and ignores the rest, without a word
    ({'optim_wrapper.paramwise_cfg': dict(norm_decay_mul=0.)},
     r"optim_wrapper.paramwise_cfg.norm_decay_mul: .* ignored it\). Did you mean 'norm_decay_mult'"),
    ({'optim_wrapper.paramwise_cfg': dict(custom_keys={'head': dict(lr_mul=10)})},
     r"custom_keys\['head'\].lr_mul: .* Did you mean 'lr_mult'"),
    ({'val_evaluator.top_k': 1}, r"val_evaluator.top_k: .* Accuracy. Did you mean 'topk'"),
    ({'default_hooks.logger.intervall': 5}, r"default_hooks.logger.intervall: .* LoggerHook. Did you mean 'interval'"),
    # mmengine: KeyError: '`cfg` or `default_args` must contain the key "type", but got {'interval': 1}'
    ({'default_hooks.checkpont.interval': 1},
     r"default_hooks.checkpont: no hook of this config has that name, so its options \(interval\) build nothing: did "
     r"you mean default_hooks.checkpoint\?"),
    # a scheduler's options are its parent class's: mmengine's LRSchedulerMixin takes **kwargs and hands them on
    ({'param_scheduler': [dict(type='MultiStepLR', milestone=[2])]},
     r"param_scheduler\[0\].milestone: .* MultiStepLR. Did you mean 'milestones'"),
    ({'param_scheduler': [dict(type='MultiStepLR', milestones=[2], optimizer=None)]},
     r"param_scheduler\[0\].optimizer: 'optimizer' is set by mmengine itself"),
    # mmengine: a bare KeyError: 'by_epoch' / 'sampler'
    ({'train_cfg': dict(_delete_=True, max_epochs=2)}, r"train_cfg: it needs by_epoch=True"),
    ({'val_dataloader.sampler': None}, None),
])
def test_a_misspelt_key_of_a_runner_section_is_named_with_the_closest_one(options, message):
    from kdplug.tools.config_keys import check_runner_keys
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict(options)
    if message is None:  # a sampler set to None is the user's choice: mmengine builds the loader without one
        check_runner_keys(cfg)
        return
    with pytest.raises(SystemExit, match=message):
        check_runner_keys(cfg)


def test_a_loader_without_a_sampler_or_dataset_says_what_to_add():
    from kdplug.tools.config_keys import check_runner_keys
    cfg = Config.fromfile(str(CONFIG))
    del cfg.train_dataloader['sampler']
    del cfg.val_dataloader['dataset']
    with pytest.raises(SystemExit) as stopped:
        check_runner_keys(cfg)
    said = str(stopped.value)
    assert "train_dataloader: it has no sampler (mmengine builds the loader from it): add " \
           "sampler=dict(type='DefaultSampler', shuffle=True)" in said
    assert 'val_dataloader: it has no dataset' in said


def test_every_problem_is_named_in_one_message():
    from kdplug.tools.config_keys import check_runner_keys
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict({'train_cfg.max_epoch': 1, 'train_dataloader.batchsize': 8})
    with pytest.raises(SystemExit) as stopped:
        check_runner_keys(cfg)
    assert 'train_cfg.max_epoch' in str(stopped.value) and 'train_dataloader.batchsize' in str(stopped.value)


def test_a_near_miss_of_a_runner_key_at_the_top_of_a_config_is_a_warning(capsys):
    """``param_schedulers`` is read by nobody: the run kept a constant learning rate without a word. A config's own
    names (its pipelines, data_root) are not near misses."""
    from kdplug.tools.config_keys import check_runner_keys, unread_top_level_keys
    cfg = Config.fromfile(str(CONFIG))
    assert unread_top_level_keys(cfg) == []
    cfg.merge_from_dict({'param_schedulers': [], 'default_hook': {}})
    check_runner_keys(cfg)
    err = capsys.readouterr().err
    assert "warning: the config key 'param_schedulers' is read by nothing (mmengine's Runner reads " \
           "'param_scheduler')" in err and "'default_hook'" in err


def test_a_class_that_takes_any_keyword_and_another_constructor_are_left_alone():
    """**kwargs (mmengine's CheckpointHook hands them to the checkpoint writer) and a constructor other than
    mmengine's default (it reads its own paramwise_cfg keys): nothing can be called unknown."""
    from kdplug.tools.config_keys import accepted_keys, check_runner_keys
    from mmengine.hooks import CheckpointHook
    assert accepted_keys(CheckpointHook) is None
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict({'optim_wrapper.constructor': 'LearningRateDecayOptimWrapperConstructor',
                         'optim_wrapper.paramwise_cfg': dict(layer_decay_rate=0.65)})
    check_runner_keys(cfg)


def test_the_training_tool_stops_on_a_misspelt_key_before_building_anything(tmp_path):
    from kdplug.tools.train import main
    with pytest.raises(SystemExit, match=r"train_cfg.max_epoch: .* Did you mean 'max_epochs'"):
        main([str(CONFIG), '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.max_epoch=1'])
    assert not any(tmp_path.iterdir())  # the Runner would have made its timestamped log folder
