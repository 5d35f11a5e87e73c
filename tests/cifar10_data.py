"""A few real CIFAR-10 images for the tests, in the folder layout of the configs (train/<class>, test/<class>).

Copied out of tests/data/cifar10, which the repository ships (8 train and 4 test images per class, the first by file
name; tests/data/cifar10/PROVENANCE.md): the tests read nothing outside the repository.
"""
import shutil
from pathlib import Path

from conftest import TEST_DATA

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
SHIPPED = TEST_DATA / 'cifar10'


def make_cifar10_subset(root: Path, per_class: dict) -> Path:
    """Write the first ``per_class[split]`` images (by file name) of every class of each split under ``root``."""
    for split, n in per_class.items():
        for cls in CLASSES:
            images = sorted((SHIPPED / split / cls).glob('*.jpg'))
            if len(images) < n:
                raise ValueError(f'tests/data/cifar10/{split}/{cls} ships {len(images)} images, {n} asked for')
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for path in images[:n]:
                shutil.copy(path, root / split / cls / path.name)
    return root
