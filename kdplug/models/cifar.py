"""The CIFAR backbones of the distillation papers (CRD, DKD, NormKD...): ResNet, WideResNet and VGG.

These are the architectures of the RepDistiller / mdistiller model zoos (teachers resnet56/110/32x4, wrn-40-2,
vgg13; students resnet8x4/20/32, wrn-16-2/40-1, vgg8), written as mmpretrain-style backbones: ``forward(x)``
returns the tuple of the stage outputs picked by ``out_indices`` (default: the last stage), to be followed by
``GlobalAveragePooling`` and a ``LinearClsHead``. The classifier is not part of the backbone.

Every stage output is post-activation, the feature map the papers' nets pool and classify (the last stage of
the pre-activation WideResNet includes its final BN+ReLU; its earlier stages are the raw residual sums, as in
the papers' feature lists). Parameter names follow those model zoos (``layer1.0.conv1``, ``block1.layer.0.bn1``,
``block0.0``...), so their checkpoints load with the key prefix ``backbone.`` and ``fc.``/``classifier.`` renamed
to ``head.fc.``.

torch and mmengine only: no mmpretrain, no mmcv, no registration here (see :mod:`kdplug.models.plugin`).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class _CifarBackbone(BaseModule):
    """Shared parts: ``out_indices`` (ints, negative allowed), ``out_channels`` and Kaiming init."""

    out_channels: Tuple[int, ...]

    def _set_out_indices(self, out_indices: Union[int, Sequence[int]]) -> None:
        num_stages = len(self.out_channels)
        indices = (out_indices, ) if isinstance(out_indices, int) else tuple(out_indices)
        if not indices:
            raise ValueError(f'{type(self).__name__}: out_indices is empty')
        normalized = []
        for index in indices:
            if not -num_stages <= index < num_stages:
                raise ValueError(f'{type(self).__name__}: out_indices {indices} out of range for '
                                 f'{num_stages} stages (0..{num_stages - 1})')
            normalized.append(index % num_stages)
        self.out_indices = tuple(normalized)

    def _kaiming_init(self) -> None:
        """He init (fan_out, ReLU) for convs, BN at weight 1 / bias 0, as the papers' nets; an ``init_cfg``
        given to the constructor still applies on top, through :meth:`init_weights`."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------- ResNet


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(_CifarBackbone):
    """The CIFAR ResNet of He et al. 2016: a 3x3 stem, then 3 stages of ``(depth - 2) / 6`` basic blocks at
    strides 1, 2, 2. Stage outputs for a 32x32 input: ``widths[i]`` channels at 32, 16 and 8 pixels.

    Args:
        depth: 6n+2 (8, 14, 20, 32, 44, 56, 110...).
        widths: channels of the 3 stages.
        stem_channels: channels of the stem conv; ``widths[0]`` when None.
        out_indices: the stages whose outputs ``forward`` returns.
    """

    def __init__(self, depth: int, widths: Sequence[int] = (16, 32, 64), stem_channels: Optional[int] = None,
                 out_indices: Union[int, Sequence[int]] = (2, ), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f'CifarResNet: depth must be 6n+2 with n >= 1 (8, 14, 20, 32...), got {depth}')
        if len(widths) != 3:
            raise ValueError(f'CifarResNet: widths must give 3 stage widths, got {widths}')
        self.depth = depth
        self.out_channels = tuple(widths)
        self._set_out_indices(out_indices)
        stem_channels = widths[0] if stem_channels is None else stem_channels
        self.conv1 = _conv3x3(3, stem_channels)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        num_blocks = (depth - 2) // 6
        in_channels = stem_channels
        for i, (channels, stride) in enumerate(zip(widths, (1, 2, 2))):
            blocks = [CifarBasicBlock(in_channels if j == 0 else channels, channels, stride if j == 0 else 1)
                      for j in range(num_blocks)]
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            in_channels = channels
        self._kaiming_init()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3)):
            x = layer(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class ResNet8(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=8, **kwargs)


class ResNet14(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=14, **kwargs)


class ResNet20(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=20, **kwargs)


class ResNet32(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=32, **kwargs)


class ResNet44(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=44, **kwargs)


class ResNet56(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=56, **kwargs)


class ResNet110(CifarResNet):
    def __init__(self, **kwargs):
        super().__init__(depth=110, **kwargs)


class ResNet8x4(CifarResNet):
    """resnet8x4 of CRD: depth 8, stem 32, stages 64/128/256."""

    def __init__(self, **kwargs):
        super().__init__(depth=8, widths=(64, 128, 256), stem_channels=32, **kwargs)


class ResNet32x4(CifarResNet):
    """resnet32x4 of CRD: depth 32, stem 32, stages 64/128/256."""

    def __init__(self, **kwargs):
        super().__init__(depth=32, widths=(64, 128, 256), stem_channels=32, **kwargs)


# ------------------------------------------------------------------------------------------- WideResNet


class WideBasicBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus the
    shortcut; when the shape changes, the shortcut is a 1x1 conv of the activated input."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.drop_rate = drop_rate
        self.convShortcut = None  # noqa: N815 (the model zoos' name, kept for their checkpoints)
        if in_channels != channels or stride != 1:
            self.convShortcut = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class _WideStage(nn.Module):
    """A stage of WideResNet (a ``layer`` Sequential, the model zoos' ``NetworkBlock``)."""

    def __init__(self, num_blocks: int, in_channels: int, channels: int, stride: int, drop_rate: float):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_channels if i == 0 else channels, channels, stride if i == 0 else 1, drop_rate)
            for i in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class CifarWideResNet(_CifarBackbone):
    """WRN-depth-k: a 3x3 stem to 16 channels, 3 stages of ``(depth - 4) / 6`` pre-activation blocks with
    16k, 32k, 64k channels at strides 1, 2, 2, and a final BN+ReLU applied to the last stage's output.

    Args:
        depth: 6n+4 (16, 28, 40...).
        widen_factor: k.
        drop_rate: dropout between the two convs of a block (0 in the distillation papers).
        out_indices: the stages whose outputs ``forward`` returns.
    """

    def __init__(self, depth: int, widen_factor: int = 1, drop_rate: float = 0.0,
                 out_indices: Union[int, Sequence[int]] = (2, ), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f'CifarWideResNet: depth must be 6n+4 with n >= 1 (16, 28, 40...), got {depth}')
        self.depth, self.widen_factor = depth, widen_factor
        self.out_channels = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self._set_out_indices(out_indices)
        num_blocks = (depth - 4) // 6
        self.conv1 = _conv3x3(3, 16)
        self.block1 = _WideStage(num_blocks, 16, self.out_channels[0], 1, drop_rate)
        self.block2 = _WideStage(num_blocks, self.out_channels[0], self.out_channels[1], 2, drop_rate)
        self.block3 = _WideStage(num_blocks, self.out_channels[1], self.out_channels[2], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(self.out_channels[2])  # the final BN (model zoo name)
        self._kaiming_init()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, stage in enumerate((self.block1, self.block2, self.block3)):
            x = stage(x)
            if i == 2:
                x = F.relu(self.bn1(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class WRN16_2(CifarWideResNet):  # noqa: N801
    def __init__(self, **kwargs):
        super().__init__(depth=16, widen_factor=2, **kwargs)


class WRN40_1(CifarWideResNet):  # noqa: N801
    def __init__(self, **kwargs):
        super().__init__(depth=40, widen_factor=1, **kwargs)


class WRN40_2(CifarWideResNet):  # noqa: N801
    def __init__(self, **kwargs):
        super().__init__(depth=40, widen_factor=2, **kwargs)


# -------------------------------------------------------------------------------------------------- VGG


class CifarVGG(_CifarBackbone):
    """The CIFAR VGG of CRD: stages of 3x3 conv (with bias) + BN + ReLU, a 2x2 max-pool between stages
    (none before the last one on 32x32 inputs, so 5 stages give 32, 16, 8, 4, 4 pixels).

    Args:
        cfg: the channels of the convs of each stage, e.g. ``[[64], [128], [256], [512], [512]]`` (vgg8).
        batch_norm: BN after each conv (the ``_bn`` variants used by the papers).
        out_indices: the stages whose outputs ``forward`` returns; default the last one.
    """

    def __init__(self, cfg: Sequence[Sequence[int]], batch_norm: bool = True,
                 out_indices: Union[int, Sequence[int], None] = None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.cfg = [list(stage) for stage in cfg]
        self.out_channels = tuple(stage[-1] for stage in self.cfg)
        self._set_out_indices(len(self.cfg) - 1 if out_indices is None else out_indices)
        in_channels = 3
        for i, stage in enumerate(self.cfg):
            layers = []
            for channels in stage:
                layers += [_conv3x3(in_channels, channels, bias=True)]
                layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
                in_channels = channels
            # the stage ends before its last ReLU (so that its pre-activation output can be read); forward adds it
            self.add_module(f'block{i}', nn.Sequential(*layers[:-1]))
        self._kaiming_init()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        input_size = x.shape[2]
        num_stages = len(self.cfg)
        outs = []
        for i in range(num_stages):
            # as the model zoos: pool before every stage but the first and the last (also before the last one
            # for 64x64 inputs, e.g. Tiny-ImageNet)
            if 0 < i < num_stages - 1 or (i == num_stages - 1 and input_size == 64):
                x = F.max_pool2d(x, 2, 2)
            x = F.relu(getattr(self, f'block{i}')(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class VGG8(CifarVGG):
    """vgg8 (with BN) of CRD: one conv per stage, 64-128-256-512-512."""

    def __init__(self, **kwargs):
        super().__init__(cfg=[[64], [128], [256], [512], [512]], **kwargs)


class VGG13(CifarVGG):
    """vgg13 (with BN) of CRD: two convs per stage, 64-128-256-512-512."""

    def __init__(self, **kwargs):
        super().__init__(cfg=[[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], **kwargs)


#: Every named architecture, in the order the plugin registers them.
CIFAR_BACKBONES = (ResNet8, ResNet14, ResNet20, ResNet32, ResNet44, ResNet56, ResNet110, ResNet8x4, ResNet32x4,
                   WRN16_2, WRN40_1, WRN40_2, VGG8, VGG13)
