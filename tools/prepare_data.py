"""Put a dataset where the configs look for it (``data/<name>`` by default), with balanced subset lists.

    python tools/prepare_data.py cifar10 [--root data/cifar10] [--source PATH]

CIFAR-10 comes from ``--source`` (a tarball of the JPEG folder layout ``train/<class>/*.jpg``, ``test/<class>/*.jpg``;
default: ``$KDPLUG_SHARED_DATA/cifar10/cifar10_jpg.tar.xz`` or ``../shared/data/cifar10/cifar10_jpg.tar.xz`` when
present) or, elsewhere, from the official python archive (downloaded and written as PNG folders). Either way it
also writes ``meta/<split>_<n>.txt``: class-balanced subsets (``class/file label`` lines, mmpretrain's
CustomDataset ``ann_file`` format) for short runs.
"""
import argparse
import os
import pickle
import random
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
SUBSETS = {'train': (1000, 5000, 10000, 20000), 'test': (1000, 2000)}


def shared_tarball() -> Path:
    shared = Path(os.environ.get('KDPLUG_SHARED_DATA', REPO.parent / 'shared' / 'data'))
    return shared / 'cifar10' / 'cifar10_jpg.tar.xz'


def unpack_folder_tarball(source: Path, root: Path) -> None:
    print(f'unpacking {source} into {root} ...', flush=True)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source) as tar:
        members = tar.getmembers()
        top = {m.name.split('/')[0] for m in members}
        strip = len(top) == 1 and not {'train', 'test'} & top  # a single top folder around train/ and test/
        for member in members:
            if strip:
                member.name = member.name.split('/', 1)[1] if '/' in member.name else ''
            if member.name and (member.isfile() or member.isdir()):
                tar.extract(member, root, filter='data')


def download_official(root: Path) -> None:
    from PIL import Image
    archive = root / 'cifar-10-python.tar.gz'
    root.mkdir(parents=True, exist_ok=True)
    if not archive.exists():
        print(f'downloading {CIFAR10_URL} ...', flush=True)
        urllib.request.urlretrieve(CIFAR10_URL, archive)
    with tarfile.open(archive) as tar:
        for split, names in (('train', [f'data_batch_{i}' for i in range(1, 6)]), ('test', ['test_batch'])):
            counts = {c: 0 for c in CIFAR10_CLASSES}
            for name in names:
                batch = pickle.load(tar.extractfile(f'cifar-10-batches-py/{name}'), encoding='bytes')
                images = batch[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                for image, label in zip(images, batch[b'labels']):
                    cls = CIFAR10_CLASSES[label]
                    (root / split / cls).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(root / split / cls / f'{counts[cls]:04d}.png')
                    counts[cls] += 1
    archive.unlink()


def write_subsets(root: Path) -> None:
    (root / 'meta').mkdir(exist_ok=True)
    for split, sizes in SUBSETS.items():
        classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
        files = {c: sorted(p.name for p in (root / split / c).iterdir()) for c in classes}
        rng = random.Random(0)
        for c in classes:
            rng.shuffle(files[c])
        for size in sizes:
            per_class = size // len(classes)
            if per_class > min(len(f) for f in files.values()):
                continue
            lines = [f'{c}/{name} {label}' for label, c in enumerate(classes) for name in files[c][:per_class]]
            rng.shuffle(lines)
            (root / 'meta' / f'{split}_{size}.txt').write_text('\n'.join(lines) + '\n')


def prepare_cifar10(root: Path, source: Path = None) -> Path:
    if not (root / 'train').is_dir() or not (root / 'test').is_dir():
        source = source or shared_tarball()
        if source.exists():
            unpack_folder_tarball(source, root)
        else:
            download_official(root)
    write_subsets(root)
    counts = {split: sum(1 for _ in (root / split).glob('*/*')) for split in ('train', 'test')}
    print(f'CIFAR-10 ready in {root}: {counts["train"]} train / {counts["test"]} test images', flush=True)
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dataset', choices=['cifar10'])
    parser.add_argument('--root', type=Path, default=None, help='default: data/<dataset> in the repository')
    parser.add_argument('--source', type=Path, default=None, help='a tarball of the folder layout')
    args = parser.parse_args(argv)
    prepare_cifar10(args.root or REPO / 'data' / args.dataset, args.source)


if __name__ == '__main__':
    main()
