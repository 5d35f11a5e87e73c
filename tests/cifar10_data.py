"""A few real CIFAR-10 images for the tests, in the folder layout of the configs (train/<class>, test/<class>).

Taken from data/cifar10 when tools/prepare_data.py has unpacked it, else streamed out of the shared tarball
(../shared/data/cifar10/cifar10_jpg.tar.xz; KDPLUG_SHARED_DATA points elsewhere).
"""
import shutil
import tarfile
from pathlib import Path

from conftest import DATA, REPO

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


def make_cifar10_subset(root: Path, per_class: dict) -> Path:
    """Write ``per_class[split]`` images of every class of each split under ``root``; returns root."""
    wanted = {(split, cls): n for split, n in per_class.items() for cls in CLASSES}
    prepared = REPO / 'data' / 'cifar10'
    if all((prepared / split / cls).is_dir() for split, cls in wanted):
        for (split, cls), n in wanted.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for path in sorted((prepared / split / cls).iterdir())[:n]:
                shutil.copy(path, root / split / cls / path.name)
        return root
    tarball = DATA / 'cifar10' / 'cifar10_jpg.tar.xz'
    if not tarball.exists():
        raise FileNotFoundError(f'no CIFAR-10 images: run tools/prepare_data.py cifar10 or provide {tarball}')
    counts = dict.fromkeys(wanted, 0)
    with tarfile.open(tarball) as tar:
        for member in tar:
            parts = Path(member.name).parts
            key = tuple(parts[-3:-1]) if len(parts) >= 3 else None
            if member.isfile() and key in counts and counts[key] < wanted[key]:
                (root / key[0] / key[1]).mkdir(parents=True, exist_ok=True)
                (root / key[0] / key[1] / parts[-1]).write_bytes(tar.extractfile(member).read())
                counts[key] += 1
                if counts == wanted:
                    break
    return root
