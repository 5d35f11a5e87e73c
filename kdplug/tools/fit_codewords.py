"""Fit letKD's codewords: run the trained teacher over the training set, fit k-means codewords (penultimate level)
and LDA + per-class sub-classes (intermediate level), and save them to the file the config names.

    python tools/fit_codewords.py CONFIG [--out FILE] [--device cpu|cuda] [--max-images N] [--max-vectors N]
                                  [--batch-size N] [--workers N] [--iters 30] [--seed 0] [--augment]
                                  [--cfg-options k=v ...]

CONFIG is a letKD distillation config (``kdplug.Distiller`` with a teacher network, e.g. ``CheckpointTeacher``, and
letKD losses, ``LetKDPenultimateLoss`` / ``LetKDIntermediateLoss``): a classifier's (configs/letkd/), or a two-stage
detector's at the penultimate level (configs/detection/letkd-1_*). What is fitted, and how, is
:mod:`kdplug.letkd.fitting`; this is its command line (arguments, progress lines, writing the files of
:mod:`kdplug.letkd.io`).

The file (``torch.save`` of tensors, strings and numbers: loadable with ``weights_only=True``) is written to
``--out`` or, by default, to the ``codewords`` path of each loss. Training reads it at its first step. On a GPU
(``--device cuda``, the default when one is present) the full CIFAR-100 / Tiny-ImageNet training sets take a few
minutes; on CPU use ``--max-images`` / ``--max-vectors`` for small runs.

Also ``kdplug-fit-codewords`` and ``python -m kdplug.tools.fit_codewords`` from an installed kdplug.
"""
import argparse
import os
from typing import Dict, Mapping, Optional, Sequence


def log(message: str) -> None:
    print(f'[fit_codewords] {message}', flush=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('config', help='a letKD distillation config (kdplug.Distiller with LetKDPenultimateLoss / '
                        'LetKDIntermediateLoss losses)')
    parser.add_argument('--out', help='the codewords file to write (default: the codewords path of the config)')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--max-images', type=positive, default=None, help='use at most N training images (random)')
    parser.add_argument('--max-vectors', type=positive, default=1_000_000,
                        help='keep at most N feature vectors (spatial positions) per stage for the fit')
    parser.add_argument('--batch-size', type=positive, default=None,
                        help='batch size of the teacher (default: config)')
    parser.add_argument('--workers', type=int, default=None, help='dataloader workers (default: config)')
    parser.add_argument('--iters', type=positive, default=30, help='k-means iterations at most')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--augment', action='store_true', help='use the training pipeline (random augmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.teacher.checkpoint=teacher.pth')
    args = parser.parse_args(argv)
    if args.out is not None and os.path.isdir(args.out):  # before the fit, not after it
        parser.error(f'--out {args.out} is a folder: give the codewords file to write, e.g. {args.out}/codewords.pth')
    return args


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text} is not a positive integer')
    return value


def write_files(files: Mapping[str, Mapping]) -> None:
    """Write each codewords file (path -> contents) and say what it holds."""
    from kdplug.letkd.io import save_codewords_file
    for path, contents in files.items():
        save_codewords_file(path, contents)
        log(f'wrote {path}: ' + ', '.join(f'{module} ({s["level"]})' for module, s in contents['sections'].items()))


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    """Parse ``argv``, fit, write; returns the files written (path -> contents)."""
    from kdplug.letkd.fitting import CodewordsFitError, fit_codewords
    from kdplug.tools import read_config
    args = parse_args(argv)
    cfg = read_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        files = fit_codewords(cfg, out=args.out, device=args.device, max_images=args.max_images,
                              max_vectors=args.max_vectors, batch_size=args.batch_size, workers=args.workers,
                              iters=args.iters, seed=args.seed, augment=args.augment, log=log)
    except CodewordsFitError as err:
        raise SystemExit(f'fit_codewords: {err}') from None
    write_files(files)
    return files


def main(argv: Optional[Sequence[str]] = None) -> None:
    run(argv)


if __name__ == '__main__':
    main()
