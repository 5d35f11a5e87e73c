"""Put a dataset where the configs look for it (``data/<name>`` by default), with balanced subset lists.

    python tools/prepare_data.py cifar10 [--root data/cifar10] [--source PATH]
    python tools/prepare_data.py coco128 [--root data/coco128] [--source PATH]
    python tools/prepare_data.py tiny-imagenet [--root data/tiny-imagenet-200] [--source DIR]

CIFAR-10 comes from ``--source`` (a tarball of the JPEG folder layout ``train/<class>/*.jpg``, ``test/<class>/*.jpg``;
default: ``$KDPLUG_SHARED_DATA/cifar10/cifar10_jpg.tar.xz`` or ``../shared/data/cifar10/cifar10_jpg.tar.xz`` when
present) or, elsewhere, from the official python archive (downloaded and written as PNG folders). Either way it
also writes ``meta/<split>_<n>.txt``: class-balanced subsets (``class/file label`` lines, mmpretrain's
CustomDataset ``ann_file`` format) for short runs.

coco128 (the detection configs' short benchmark) comes from ``--source`` (default:
``$KDPLUG_SHARED_DATA/coco128/coco128.tar`` or ``../shared/data/coco128/coco128.tar``), a tarball of
``coco128/{train2017,val2017}/*.jpg`` and ``coco128/annotations/instances_{train,val}2017.json``, unpacked as
``train2017/``, ``val2017/`` and ``annotations/`` under ``--root``.
"""
import argparse
import os
import pickle
import random
import tarfile
import urllib.request
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
SUBSETS = {'train': (1000, 5000, 10000, 20000), 'test': (1000, 2000)}


def shared_data() -> Path:
    """The shared data folder of this workplace (KDPLUG_SHARED_DATA, else ../shared/data beside the repository)."""
    return Path(os.environ.get('KDPLUG_SHARED_DATA', REPO.parent / 'shared' / 'data'))


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
        source = source or shared_data() / 'cifar10' / 'cifar10_jpg.tar.xz'
        if source.exists():
            unpack_folder_tarball(source, root)
        else:
            download_official(root)
    write_subsets(root)
    counts = {split: sum(1 for _ in (root / split).glob('*/*')) for split in ('train', 'test')}
    print(f'CIFAR-10 ready in {root}: {counts["train"]} train / {counts["test"]} test images', flush=True)
    return root


COCO128_PARTS = ('train2017', 'val2017', 'annotations')


def prepare_coco128(root: Path, source: Path = None) -> Path:
    source = source or shared_data() / 'coco128' / 'coco128.tar'
    if not all((root / part).is_dir() for part in COCO128_PARTS):
        if not source.exists():
            raise FileNotFoundError(f'{source} does not exist: give the coco128 tarball with --source')
        print(f'unpacking {source} into {root} ...', flush=True)
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source) as tar:
            for member in tar.getmembers():
                parts = member.name.split('/')
                if parts[0] == 'coco128':  # the tarball's top folder
                    parts = parts[1:]
                if parts and parts[0] in COCO128_PARTS and (member.isfile() or member.isdir()):
                    member.name = '/'.join(parts)
                    tar.extract(member, root, filter='data')
    counts = {part: sum(1 for _ in (root / part).glob('*.jpg')) for part in COCO128_PARTS[:2]}
    print(f'coco128 ready in {root}: {counts["train2017"]} train2017 / {counts["val2017"]} val2017 images', flush=True)
    return root


TINY_IMAGENET_URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'


def prepare_tiny_imagenet(root: Path, source: Path = None) -> Path:
    """Tiny-ImageNet-200 in its original layout, plus ``meta/val.txt`` (``images/<file> <label>`` lines, labels in
    the sorted-wnid order that CustomDataset gives the train folders).

    From ``--source`` (a folder of ``*.tar.gz`` parts, default the shared one, whose parts unpack under
    ``tiny-imagenet-200/``) or, elsewhere, the official zip (downloaded).
    """
    if not (root / 'train').is_dir() or not (root / 'val' / 'val_annotations.txt').exists():
        source = source or shared_data() / 'tiny-imagenet-200'
        root.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            for part in sorted(source.glob('*.tar.gz')):
                print(f'unpacking {part} ...', flush=True)
                with tarfile.open(part) as tar:
                    for member in tar.getmembers():
                        if member.name.startswith('tiny-imagenet-200/') and (member.isfile() or member.isdir()):
                            member.name = member.name[len('tiny-imagenet-200/'):]
                            tar.extract(member, root, filter='data')
        else:
            import zipfile
            archive = root / 'tiny-imagenet-200.zip'
            if not archive.exists():
                print(f'downloading {TINY_IMAGENET_URL} ...', flush=True)
                urllib.request.urlretrieve(TINY_IMAGENET_URL, archive)
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if name.startswith('tiny-imagenet-200/') and not name.endswith('/'):
                        target = root / name[len('tiny-imagenet-200/'):]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zf.read(name))
            archive.unlink()
    wnids = sorted(p.name for p in (root / 'train').iterdir() if p.is_dir())
    label = {wnid: i for i, wnid in enumerate(wnids)}
    present = {p.name for p in (root / 'val' / 'images').glob('*.JPEG')}
    lines = [f'images/{name} {label[wnid]}' for name, wnid, *_ in
             (line.split('\t') for line in (root / 'val' / 'val_annotations.txt').read_text().splitlines())
             if name in present]
    (root / 'meta').mkdir(exist_ok=True)
    (root / 'meta' / 'val.txt').write_text('\n'.join(lines) + '\n')
    (root / 'meta' / 'classes.txt').write_text('\n'.join(wnids) + '\n')
    train = sum(1 for _ in (root / 'train').glob('*/images/*.JPEG'))
    print(f'Tiny-ImageNet ready in {root}: {len(wnids)} classes, {train} train / {len(lines)} val images', flush=True)
    return root


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dataset', choices=['cifar10', 'coco128', 'tiny-imagenet'])
    parser.add_argument('--root', type=Path, default=None, help='default: data/<dataset> in the repository')
    parser.add_argument('--source', type=Path, default=None, help='a tarball of the folder layout')
    args = parser.parse_args(argv)
    prepare = {'cifar10': prepare_cifar10, 'coco128': prepare_coco128, 'tiny-imagenet': prepare_tiny_imagenet}
    default_root = {'tiny-imagenet': 'tiny-imagenet-200'}.get(args.dataset, args.dataset)
    prepare[args.dataset](args.root or REPO / 'data' / default_root, args.source)


if __name__ == '__main__':
    main()
