"""How tests/data was made (a maintainer's tool: the tests only read what it wrote, never its source).

    python tests/data/make_test_data.py DATA   # DATA holds cifar10/cifar10_jpg.tar.xz and coco128/coco128.tar

CIFAR-10: the first 8 (train) and 4 (test) images of every class, by file name, out of cifar10/cifar10_jpg.tar.xz.
coco128: the images that tests/test_detection_distill.py uses, out of coco128/coco128.tar, with both annotation files
cut to those images (images in the order below, every category kept).
"""
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
CIFAR10_PER_CLASS = {'train': 8, 'test': 4}
COCO128_IDS = {'train2017': (250, 9, 25, 30), 'val2017': (139, 285)}  # 250: no box; 9: polygons and 8 boxes


def cifar10(tarball: Path, out: Path) -> None:
    wanted = {f'{split}/{cls}/{i:04d}.jpg' for split, n in CIFAR10_PER_CLASS.items() for cls in CLASSES
              for i in range(n)}
    with tarfile.open(tarball) as tar:
        for member in tar:
            name = '/'.join(Path(member.name).parts[-3:])
            if member.isfile() and name in wanted:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_bytes(tar.extractfile(member).read())
                wanted.discard(name)
    assert not wanted, sorted(wanted)[:5]


def coco128(tarball: Path, out: Path) -> None:
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        for split, ids in COCO128_IDS.items():
            full = json.load(tar.extractfile(f'coco128/annotations/instances_{split}.json'))
            images = {image['id']: image for image in full['images']}
            subset = dict(full, images=[images[i] for i in ids],
                          annotations=[a for a in full['annotations'] if a['image_id'] in ids])
            (out / 'annotations' / f'instances_{split}.json').write_text(json.dumps(subset, indent=1) + '\n')
            (out / split).mkdir(exist_ok=True)
            for i in ids:
                name = images[i]['file_name']
                (out / split / name).write_bytes(tar.extractfile(f'coco128/{split}/{name}').read())


if __name__ == '__main__':
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    data = Path(sys.argv[1])
    cifar10(data / 'cifar10' / 'cifar10_jpg.tar.xz', HERE / 'cifar10')
    coco128(data / 'coco128' / 'coco128.tar', HERE / 'coco128')
