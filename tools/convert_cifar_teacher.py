"""Convert a CIFAR teacher checkpoint of the papers' code bases (RepDistiller / mdistiller model zoo: resnet32x4,
wrn_40_2, resnet56, vgg13, ...) into an mmpretrain ImageClassifier checkpoint for kdplug's CIFAR backbones.

    python tools/convert_cifar_teacher.py resnet32x4_vanilla/ckpt_epoch_240.pth work_dirs/resnet32x4_cifar100.pth
    # then: --cfg-options model.teacher.checkpoint=work_dirs/resnet32x4_cifar100.pth

Those checkpoints hold ``{'model': state_dict, ...}`` (or a bare state dict) with the backbone's parameters at the top
level and the classifier as ``fc.*`` (ResNet, WRN) or ``classifier.*`` (VGG). kdplug's backbones use the same names
(kdplug/models/cifar.py), so the conversion is a renaming: ``backbone.<name>`` and ``head.fc.*``. The input is
loaded with ``weights_only=True``; the output is ``{'state_dict': ..., 'meta': {...}}``.
"""
import argparse
from typing import Dict

import torch

CLASSIFIER_PREFIXES = ('fc.', 'classifier.', 'linear.')


def convert(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a model-zoo CIFAR state dict to ImageClassifier keys (``backbone.*``, ``head.fc.*``)."""
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}
    converted = {}
    for key, value in state_dict.items():
        prefix = next((p for p in CLASSIFIER_PREFIXES if key.startswith(p)), None)
        converted[f'head.fc.{key[len(prefix):]}' if prefix else f'backbone.{key}'] = value
    if not any(k.startswith('head.fc.') for k in converted):
        raise ValueError('no classifier weights (fc.* / classifier.* / linear.*) in the checkpoint: is it a CIFAR '
                         'classifier of the RepDistiller / mdistiller model zoo?')
    return converted


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('checkpoint', help='a model-zoo CIFAR checkpoint (.pth)')
    parser.add_argument('out', help='where to write the mmpretrain checkpoint')
    args = parser.parse_args(argv)
    loaded = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
    state_dict = loaded.get('model', loaded.get('state_dict', loaded)) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f'{args.checkpoint} holds no state dict')
    converted = convert(state_dict)
    torch.save({'state_dict': converted, 'meta': {'converted_from': args.checkpoint}}, args.out)
    classes = converted['head.fc.weight'].shape[0]
    print(f'wrote {args.out}: {len(converted)} tensors, {classes} classes')


if __name__ == '__main__':
    main()
