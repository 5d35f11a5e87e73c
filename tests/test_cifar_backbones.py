"""The CIFAR backbones of the distillation papers: shapes, sizes, checkpoint names, registry, mmpretrain."""
import functools
import math

import pytest
import torch

from kdplug.models.cifar import CIFAR_BACKBONES, CifarResNet, CifarVGG, CifarWideResNet

# name: (channels per stage, spatial size per stage for a 32x32 input)
SHAPES = {
    'ResNet8': ((16, 32, 64), (32, 16, 8)),
    'ResNet14': ((16, 32, 64), (32, 16, 8)),
    'ResNet20': ((16, 32, 64), (32, 16, 8)),
    'ResNet32': ((16, 32, 64), (32, 16, 8)),
    'ResNet44': ((16, 32, 64), (32, 16, 8)),
    'ResNet56': ((16, 32, 64), (32, 16, 8)),
    'ResNet110': ((16, 32, 64), (32, 16, 8)),
    'ResNet8x4': ((64, 128, 256), (32, 16, 8)),
    'ResNet32x4': ((64, 128, 256), (32, 16, 8)),
    'WRN16_2': ((32, 64, 128), (32, 16, 8)),
    'WRN40_1': ((16, 32, 64), (32, 16, 8)),
    'WRN40_2': ((32, 64, 128), (32, 16, 8)),
    'VGG8': ((64, 128, 256, 512, 512), (32, 16, 8, 4, 4)),
    'VGG13': ((64, 128, 256, 512, 512), (32, 16, 8, 4, 4)),
}

# Parameters of backbone + a 100-class linear classifier on the last stage (weights + biases, i.e. the CIFAR-100
# nets of the papers; BN running statistics are buffers, not counted), in millions. Measured exactly:
#   ResNet8 0.0839  ResNet14 0.1811  ResNet20 0.2783  ResNet32 0.4728  ResNet44 0.6672  ResNet56 0.8616
#   ResNet110 1.7366  ResNet8x4 1.2335  ResNet32x4 7.4339  WRN16_2 0.7033  WRN40_1 0.5698  WRN40_2 2.2552
#   VGG8 3.9650  VGG13 9.4622
# matching the sizes the papers list (CRD/DKD tables: resnet8x4 1.23M, resnet32x4 7.43M, resnet56 0.86M,
# resnet110 1.73M, wrn-16-2 0.70M, wrn-40-1 0.57M, wrn-40-2 2.26M, vgg8 3.96M, vgg13 9.46M). The often quoted
# 0.27M of resnet20 (and 1.73M of resnet110) is the 10-class CIFAR-10 size: 0.2725M / 1.7307M here.
PARAMS_M = {
    'ResNet8': 0.08, 'ResNet14': 0.18, 'ResNet20': 0.28, 'ResNet32': 0.47, 'ResNet44': 0.67, 'ResNet56': 0.86,
    'ResNet110': 1.74, 'ResNet8x4': 1.23, 'ResNet32x4': 7.43, 'WRN16_2': 0.70, 'WRN40_1': 0.57, 'WRN40_2': 2.26,
    'VGG8': 3.97, 'VGG13': 9.46,
}

BY_NAME = {cls.__name__: cls for cls in CIFAR_BACKBONES}


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def all_stages(name: str) -> torch.nn.Module:
    """One instance per architecture (the largest take a tenth of a second to build), every stage out."""
    torch.manual_seed(0)
    return BY_NAME[name](out_indices=tuple(range(len(SHAPES[name][0])))).eval()


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py: tiny CPU tensors, one thread


def test_every_named_architecture_is_covered():
    assert sorted(BY_NAME) == sorted(SHAPES) == sorted(PARAMS_M)


@pytest.mark.parametrize('name', list(SHAPES))
def test_stage_shapes_and_out_channels(name):
    channels, sizes = SHAPES[name]
    model = all_stages(name)
    assert model.out_channels == channels
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 32, 32))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(2, c, s, s) for c, s in zip(channels, sizes)]
    assert outs[-1].min() >= 0, 'the last stage must be post-activation (BN+ReLU), as the papers pool it'
    if not isinstance(model, CifarWideResNet):  # pre-activation WRN: earlier stages are raw residual sums
        assert all(o.min() >= 0 for o in outs)


@pytest.mark.parametrize('name', list(PARAMS_M))
def test_parameter_count_with_a_100_class_classifier(name):
    model = all_stages(name)
    total = num_params(model) + (model.out_channels[-1] + 1) * 100
    assert total / 1e6 == pytest.approx(PARAMS_M[name], abs=0.006), total


def test_default_out_indices_is_the_last_stage_and_negative_indices_work():
    x = torch.randn(1, 3, 32, 32)
    for cls, last in ((CifarResNet, 2), (CifarWideResNet, 2), (CifarVGG, 4)):
        kwargs = {CifarResNet: dict(depth=8), CifarWideResNet: dict(depth=10), CifarVGG: dict(cfg=[[8]] * 5)}[cls]
        assert cls(**kwargs).out_indices == (last, )
        assert cls(out_indices=-1, **kwargs).out_indices == (last, )
        outs = cls(out_indices=(2, 0), **kwargs)(x)
        assert len(outs) == 2 and outs[0].shape[-1] == 32  # stage order, like mmpretrain's backbones
        with pytest.raises(ValueError, match='out of range'):
            cls(out_indices=(last + 1, ), **kwargs)


def test_invalid_depth_is_rejected():
    with pytest.raises(ValueError, match='6n\\+2'):
        CifarResNet(depth=18)
    with pytest.raises(ValueError, match='6n\\+4'):
        CifarWideResNet(depth=18)


def test_vgg_pools_before_the_last_stage_only_for_64px_inputs():
    model = CifarVGG(cfg=[[4], [4], [4], [4], [4]], out_indices=(3, 4))
    assert [o.shape[-1] for o in model(torch.randn(1, 3, 64, 64))] == [8, 4]
    assert [o.shape[-1] for o in model(torch.randn(1, 3, 32, 32))] == [4, 4]


def test_kaiming_init_and_bn_init():
    model = all_stages('ResNet32x4')
    conv = model.layer3[1].conv2  # 256 -> 256, 3x3: fan_out = 2304
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 2304), rel=0.05)
    assert torch.all(model.layer3[1].bn2.weight == 1) and torch.all(model.layer3[1].bn2.bias == 0)


def test_parameter_names_follow_the_repdistiller_model_zoo():
    """The CRD / DKD teacher checkpoints load after adding the prefix ``backbone.``."""
    keys = {
        'ResNet8x4': ['conv1.weight', 'bn1.running_mean', 'layer1.0.conv1.weight', 'layer1.0.downsample.0.weight',
                      'layer1.0.downsample.1.running_var', 'layer3.0.bn2.bias'],
        'ResNet56': ['layer1.8.conv2.weight', 'layer2.0.downsample.1.weight', 'layer3.8.bn2.weight'],
        'WRN40_2': ['conv1.weight', 'block1.layer.0.bn1.weight', 'block1.layer.0.convShortcut.weight',
                    'block3.layer.5.conv2.weight', 'bn1.running_var'],
        'VGG13': ['block0.0.weight', 'block0.0.bias', 'block0.1.running_mean', 'block0.3.weight', 'block4.4.bias'],
        'VGG8': ['block0.0.bias', 'block4.1.weight'],
    }
    for name, expected in keys.items():
        state = all_stages(name).state_dict()
        assert set(expected) <= set(state), (name, set(expected) - set(state))
    assert not any('convShortcut' in k for k in all_stages('WRN40_1').state_dict() if k.startswith('block1.'))
    assert not any('downsample' in k for k in all_stages('ResNet20').state_dict() if k.startswith('layer1.'))


def test_backbones_come_from_the_kdplug_registry():
    from kdplug.plugins import plugin_infos
    from kdplug.registry import MODELS
    model = MODELS.build(dict(type='WRN16_2', out_indices=(0, 2)))
    assert isinstance(model, CifarWideResNet) and model.out_indices == (0, 2)
    assert isinstance(MODELS.build(dict(type='CifarResNet', depth=14, widths=(8, 16, 32))), CifarResNet)
    contributed = {n for info in plugin_infos() if info.name == 'kdplug.models.plugin'
                   for n in info.contributions.get('kdplug_models', [])}
    assert set(BY_NAME) | {'CifarResNet', 'CifarWideResNet', 'CifarVGG'} <= contributed


def test_mmpretrain_image_classifier_with_a_kdplug_backbone():
    pytest.importorskip('mmpretrain')
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='kdplug.ResNet8x4'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=256, loss=dict(type='CrossEntropyLoss'))))
    assert type(model.backbone).__name__ == 'ResNet8x4'
    assert num_params(model) == pytest.approx(1.23e6, abs=0.006e6)
    inputs = torch.randn(4, 3, 32, 32)
    data_samples = [DataSample().set_gt_label(label) for label in (0, 5, 42, 99)]
    losses = model(inputs, data_samples, mode='loss')
    assert torch.isfinite(losses['loss']) and losses['loss'].item() > 0
    losses['loss'].backward()
    assert model.backbone.conv1.weight.grad is not None
    with torch.no_grad():
        assert model(inputs, mode='tensor').shape == (4, 100)
