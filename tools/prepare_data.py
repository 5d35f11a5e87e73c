"""Put a dataset where the configs look for it (``data/<name>`` by default), with balanced subset lists.

    python tools/prepare_data.py cifar10 [--root data/cifar10] [--source PATH]
    python tools/prepare_data.py coco128 [--root data/coco128] [--source PATH]
    python tools/prepare_data.py tiny-imagenet [--root data/tiny-imagenet-200] [--source DIR_OR_ZIP]

CIFAR-10 comes from ``--source`` (a tarball of the JPEG folder layout ``train/<class>/*.jpg``, ``test/<class>/*.jpg``,
or the official ``cifar-10-python.tar.gz``; default: ``$KDPLUG_SHARED_DATA/cifar10/cifar10_jpg.tar.xz`` or
``../shared/data/cifar10/cifar10_jpg.tar.xz`` when present) or, elsewhere, from the official python archive
(downloaded and written as PNG folders). Either way it also writes ``meta/<split>_<n>.txt``: class-balanced subsets
(``class/file label`` lines, mmpretrain's CustomDataset ``ann_file`` format) for short runs.

coco128 (the detection configs' short benchmark) is the first 128 images, sorted by file name, of COCO train2017 and
of COCO val2017, with their instance annotations. It comes from ``--source`` (a tarball of
``coco128/{train2017,val2017}/*.jpg`` and ``coco128/annotations/instances_{train,val}2017.json``; default:
``$KDPLUG_SHARED_DATA/coco128/coco128.tar`` or ``../shared/data/coco128/coco128.tar`` when present) or, elsewhere,
from COCO's official bucket: ``annotations_trainval2017.zip`` (253 MB, md5-checked, deleted afterwards) cut to those
images, and the 256 images fetched one by one (each must decode at the size its annotation records). Unpacked as
``train2017/``, ``val2017/`` and ``annotations/`` under ``--root``.

What is unpacked is not trusted: a downloaded archive, or one already in place, must match its published md5 before
anything in it is read; every archive member must stay inside ``--root`` (no absolute names, ``..`` or links); a
``--source`` that does not exist is an error, never a reason to download. A dataset is unpacked into
``<root>/.kdplug_partial`` and moved into place only once it checks out as complete; ``<root>/.kdplug_complete``
(written last) records what is there, and a folder without it (an interrupted run) is prepared again from scratch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import pickle
import random
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
# Published in the download table of https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 python version");
# torchvision's CIFAR10.tgz_md5 pins the same value.
CIFAR10_MD5 = 'c58f30108f718f92721af3b95e74349a'
CIFAR10_CHECKSUM_SOURCE = 'https://www.cs.toronto.edu/~kriz/cifar.html'
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
SUBSETS = {'train': (1000, 5000, 10000, 20000), 'test': (1000, 2000)}
MARKER = '.kdplug_complete'   # written last: its presence means a whole, checked dataset
PARTIAL = '.kdplug_partial'   # where a dataset is unpacked before it is moved into place


class PrepareError(RuntimeError):
    """A problem with the data that the user has to resolve; ``main`` prints it without a traceback."""


class ChecksumError(PrepareError):
    """An archive whose md5 is not the published one: nothing in it was unpacked or unpickled."""


class UnsafeArchiveError(PrepareError):
    """An archive member that would land outside the destination (absolute name, ``..``, a link, a device)."""


class IncompleteDataError(PrepareError):
    """A dataset folder (or a source) that lacks files or classes."""


def shared_data() -> Path:
    """The shared data folder of this workplace (KDPLUG_SHARED_DATA, else ../shared/data beside the repository)."""
    return Path(os.environ.get('KDPLUG_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def given_source(source: str | os.PathLike | None) -> Path | None:
    """``--source`` as a Path; one that does not exist is an error (downloading instead would hide a typo)."""
    if source is None:
        return None
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f'--source {source} does not exist (nothing was downloaded in its place): give an '
                                f'existing path, or leave --source out to use the shared data or the official download')
    return source


# ---------------------------------------------------------------------------------------------- progress

class Progress:
    """Progress through ``total`` files on stdout: on a terminal, mmengine's ProgressBar (count, rate, elapsed, ETA),
    redrawn about every 1%; into a log file (or without mmengine), a line per 10%, not a hundred carriage returns."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.done, self.shown = total, 0, 0
        self.step = max(1, -(-total // 100))  # at most ~100 redraws
        print(f'{what}: {total} files', flush=True)
        try:
            from mmengine.utils import ProgressBar
        except ImportError:
            self.bar = None
        else:  # file= given here: the default is bound to the sys.stdout of import time
            self.bar = ProgressBar(total, file=sys.stdout) if total and sys.stdout.isatty() else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done - self.shown >= self.step or self.done >= self.total:
            self._show()

    def _show(self) -> None:
        if self.done == self.shown:
            return
        if self.bar is not None:
            self.bar.update(self.done - self.shown)
        elif self.done * 10 // self.total > self.shown * 10 // self.total or self.done >= self.total:
            print(f'  {self.done}/{self.total} files', flush=True)
        self.shown = self.done

    def close(self) -> None:
        self._show()
        if self.bar is not None:
            print(flush=True)  # the bar redraws in place: end its line


# ---------------------------------------------------------------------------------------------- downloads, checksums

def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str, published: str, given: bool = False) -> None:
    """Refuse ``path`` unless its md5 is ``expected``; called before anything in it is unpacked or unpickled.
    ``given``: the file came with --source (so deleting it and re-running is not the fix)."""
    actual = md5sum(path)
    if actual != expected:
        fix = ('give a good copy of the official archive with --source, or leave --source out to download it' if given
               else f'delete {path} and re-run to download it again, or give a good copy with --source')
        raise ChecksumError(
            f'{path}: md5 checksum {actual} does not match the expected {expected} (published at {published}), so '
            f'nothing was unpacked from it. It is incomplete, corrupt or not the official archive: {fix}.')
    print(f'verified {path} (md5 {actual})', flush=True)


def download(url: str, dest: Path) -> None:
    """``url`` to ``dest`` through ``dest.part``, so that an interrupted download never passes for the archive."""
    if not url.startswith('https://'):  # a checksum catches tampering, https keeps it from being the only guard
        raise PrepareError(f'refusing to download {url}: not https')
    part = dest.with_name(dest.name + '.part')
    print(f'downloading {url} ...', flush=True)
    urllib.request.urlretrieve(url, part)
    part.replace(dest)


def fetch_verified(archive: Path, url: str, md5: str, published: str) -> Path:
    """The official archive at ``archive`` (downloaded when absent), verified whether new or already in place."""
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        download(url, archive)
    verify_md5(archive, md5, published)
    return archive


# ---------------------------------------------------------------------------------------------- archive members

def member_target(name: str, dest: Path, archive: Path) -> Path:
    """Where archive member ``name`` lands under ``dest`` (a resolved path); refuses absolute names, ``..`` and
    anything resolving outside ``dest`` (a hand-written ``dest / name`` would follow them). Resolved lexically: the
    extraction folder is fresh, and no link is ever written into it."""
    def refuse(why: str):
        raise UnsafeArchiveError(f'{archive}: refusing member {name!r} ({why}); nothing was unpacked from it')

    if '\x00' in name or '\\' in name:
        refuse('an unusual character in its name')
    if name.startswith('/') or (len(name) > 1 and name[1] == ':'):
        refuse('an absolute path')
    if '..' in PurePosixPath(name).parts:
        refuse('a ".." component')
    target = Path(os.path.normpath(os.path.join(dest, name)))
    if not target.is_relative_to(dest):
        refuse(f'it resolves to {target}, outside {dest}')
    return target


def check_zip_members(zf: zipfile.ZipFile, archive: Path, dest: Path) -> None:
    """Every member, extracted or not, before anything is written: one unsafe member refuses the whole archive."""
    for info in zf.infolist():
        member_target(info.filename, dest, archive)
        kind = stat.S_IFMT(info.external_attr >> 16)  # unix file type, 0 for archives made elsewhere
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(f'{archive}: refusing member {info.filename!r} (a symbolic link); nothing was '
                                     f'unpacked from it')
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(f'{archive}: refusing member {info.filename!r} (not a regular file or folder); '
                                     f'nothing was unpacked from it')


def extract_zip(archive: Path, dest: Path, prefix: str = '') -> int:
    """Unpack the files under ``prefix`` (stripped) into ``dest``, all members checked first; returns the count."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        check_zip_members(zf, archive, dest)
        # the stripped names are checked too ('prefix//etc/x' loses its prefix to an absolute path), all up front
        plan = [(info, member_target(info.filename[len(prefix):], dest, archive)) for info in zf.infolist()
                if info.filename.startswith(prefix) and info.filename != prefix and not info.is_dir()]
        progress = Progress(len(plan), f'extracting {archive.name}')
        for info, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, 'wb') as out:
                shutil.copyfileobj(src, out)
            progress.update()
        progress.close()
    return len(plan)


def extract_tar(archive: Path, dest: Path, rename: Callable[[str], str | None]) -> int:
    """Unpack the files and folders that ``rename`` maps to a path under ``dest`` (None: skip); names are checked
    like zip members first, and tarfile's 'data' filter guards each extraction too. Returns the file count."""
    with tarfile.open(archive) as tar:
        return extract_members(tar, archive, dest, rename)


def extract_members(tar: tarfile.TarFile, archive: Path, dest: Path, rename: Callable[[str], str | None]) -> int:
    dest = dest.resolve()
    plan = []
    for member in tar.getmembers():  # every member and every renamed one checked before anything is written
        member_target(member.name, dest, archive)
        name = rename(member.name)
        if name and (member.isfile() or member.isdir()):  # links and devices are skipped, as before
            member_target(name, dest, archive)
            plan.append((member, name))
    progress = Progress(sum(member.isfile() for member, _ in plan), f'extracting {archive.name}')
    for member, name in plan:
        member.name = name
        tar.extract(member, dest, filter='data')
        if member.isfile():
            progress.update()
    progress.close()
    return progress.total


def unpack_folder_tarball(source: Path, root: Path) -> None:
    """A tarball of ``train/<class>/*`` and ``test/<class>/*`` (optionally inside one top folder) into ``root``."""
    print(f'unpacking {source} into {root} ...', flush=True)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source) as tar:  # one pass over the headers: getmembers() is cached
        top = {member.name.split('/')[0] for member in tar.getmembers()}
        strip = len(top) == 1 and not {'train', 'test'} & top  # a single top folder around train/ and test/
        extract_members(tar, source, root, lambda name: (name.split('/', 1)[1] if '/' in name else '') if strip
                        else name)


# ---------------------------------------------------------------------------------------------- completion

def read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(root: Path, dataset: str, source: str, counts: dict) -> None:
    tmp = root / (MARKER + '.tmp')
    tmp.write_text(json.dumps({'dataset': dataset, 'source': source, 'counts': counts}, indent=1) + '\n')
    tmp.replace(root / MARKER)  # atomic: a marker is whole or absent


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def ensure_prepared(root: Path, dataset: str, parts: tuple[str, ...], check: Callable[[Path], dict],
                    build: Callable[[Path], str]) -> dict:
    """The life cycle shared by the datasets. ``check(folder)`` returns the folder's counts or raises
    IncompleteDataError; ``build(tmp)`` unpacks a source into ``tmp`` and describes it. A folder with a marker whose
    counts still hold is ready; one without a marker (an older version's, or an interrupted run) is accepted only if
    it passes ``check``; anything else is prepared again from scratch. Returns the counts."""
    marker = read_marker(root)
    problem = None
    if marker is not None and marker.get('dataset') == dataset:
        try:
            counts = check(root)
        except IncompleteDataError as exc:
            problem = str(exc)
        else:
            if counts == marker.get('counts'):
                return counts
            problem = f'it holds {counts}, not the {marker.get("counts")} it was prepared with'
    elif any((root / part).exists() for part in parts):
        try:
            counts = check(root)
        except IncompleteDataError as exc:
            problem = f'{exc}; no {MARKER} marker, so probably an interrupted run'
        else:  # prepared by a version without markers, and whole
            write_marker(root, dataset, 'found in place (prepared before completion markers)', counts)
            return counts
    if problem:
        print(f'{root} is incomplete ({problem}): preparing it again from scratch', flush=True)
    tmp = root / PARTIAL
    remove(tmp)  # left by an interrupted run
    tmp.mkdir(parents=True)
    source = None
    try:
        source = build(tmp)
        for stray in (MARKER, PARTIAL):  # no archive has business shipping these
            remove(tmp / stray)
        counts = check(tmp)
    except BaseException as exc:
        remove(tmp)  # a refused or incomplete source leaves nothing behind
        if isinstance(exc, IncompleteDataError) and source is not None:
            raise IncompleteDataError(f'{source} does not give a complete {dataset}: {exc}') from None
        raise
    # Only now is anything in root replaced; until the marker is written the folder reads as incomplete.
    remove(root / MARKER)
    for name in {*parts, *(entry.name for entry in tmp.iterdir())}:
        remove(root / name)
    for entry in tmp.iterdir():
        entry.rename(root / entry.name)
    tmp.rmdir()
    write_marker(root, dataset, source, counts)
    return counts


def class_sets_agree(splits: dict[str, set], what: str) -> None:
    """Labels are indices into the sorted class list: a split that lacks a class would shift them."""
    everything = set().union(*splits.values())
    for split, classes in splits.items():
        if classes != everything:
            missing = sorted(everything - classes)
            shown = ', '.join(missing[:5]) + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')
            raise IncompleteDataError(f'{what}: {split} lacks {len(missing)} class(es) that the other split has '
                                      f'({shown}), so labels would disagree between the splits')


# ---------------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_ARCHIVE = 'cifar-10-python.tar.gz'
CIFAR10_PARTS = ('train', 'test', 'meta')
CIFAR10_IMAGES = 60000


class _BatchUnpickler(pickle.Unpickler):
    """Only what a CIFAR-10 batch holds (a dict of bytes, lists and a uint8 array): even an archive that passed its
    checksum cannot make pickle call anything else."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy', 'ndarray'), ('numpy', 'dtype')}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refusing {module}.{name} in a CIFAR-10 batch')


def convert_official(archive: Path, root: Path) -> None:
    """The official python archive (verified by the caller) as PNG folders ``<split>/<class>/NNNN.png``."""
    from PIL import Image
    print(f'converting {archive} into {root} ...', flush=True)
    progress = Progress(CIFAR10_IMAGES, 'writing PNG images')  # the archive passed its md5: the official 60k
    with tarfile.open(archive) as tar:
        for split, names in (('train', [f'data_batch_{i}' for i in range(1, 6)]), ('test', ['test_batch'])):
            counts = {c: 0 for c in CIFAR10_CLASSES}
            for name in names:
                batch = _BatchUnpickler(tar.extractfile(f'cifar-10-batches-py/{name}'), encoding='bytes').load()
                images = batch[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                for image, label in zip(images, batch[b'labels']):
                    cls = CIFAR10_CLASSES[label]
                    (root / split / cls).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(root / split / cls / f'{counts[cls]:04d}.png')
                    counts[cls] += 1
                    progress.update()
    progress.close()


def cifar10_counts(root: Path) -> dict:
    """Image counts of a CIFAR-10 folder layout, or IncompleteDataError: train and test must hold the same 10
    classes, none empty, and the classes of a split must be equally large (CIFAR-10 has exactly 5,000 / 1,000 images
    per class, so a smaller class is an extraction cut short)."""
    per_split = {}
    for split in ('train', 'test'):
        if not (root / split).is_dir():
            raise IncompleteDataError(f'{root / split} is missing')
        per_split[split] = {p.name: sum(1 for f in p.iterdir() if f.is_file())
                            for p in (root / split).iterdir() if p.is_dir()}
    class_sets_agree({split: set(sizes) for split, sizes in per_split.items()}, str(root))
    for split, sizes in per_split.items():
        if len(sizes) != len(CIFAR10_CLASSES):
            raise IncompleteDataError(f'{root / split} has {len(sizes)} class folders, not {len(CIFAR10_CLASSES)}')
        if min(sizes.values()) == 0 or len(set(sizes.values())) > 1:
            raise IncompleteDataError(f'{root / split}: uneven or empty classes {dict(sorted(sizes.items()))}')
    return {split: sum(sizes.values()) for split, sizes in per_split.items()}


def write_subsets(root: Path) -> None:
    """``meta/<split>_<n>.txt``, labels from the class set of both splits (which must agree)."""
    files = {split: {p.name: sorted(f.name for f in p.iterdir()) for p in (root / split).iterdir() if p.is_dir()}
             for split in SUBSETS}
    class_sets_agree({split: set(per_class) for split, per_class in files.items()}, str(root))
    classes = sorted(set().union(*files.values()))
    if not classes:
        raise IncompleteDataError(f'{root}: no class folders in {" or ".join(SUBSETS)}')
    (root / 'meta').mkdir(exist_ok=True)
    for split, sizes in SUBSETS.items():
        rng = random.Random(0)
        for c in classes:
            rng.shuffle(files[split][c])
        for size in sizes:
            target = root / 'meta' / f'{split}_{size}.txt'
            per_class = size // len(classes)
            if per_class > min(len(f) for f in files[split].values()):
                target.unlink(missing_ok=True)  # a list from an earlier, larger folder would name missing files
                continue
            lines = [f'{c}/{name} {label}' for label, c in enumerate(classes) for name in files[split][c][:per_class]]
            rng.shuffle(lines)
            target.write_text('\n'.join(lines) + '\n')


def prepare_cifar10(root: Path, source: Path | None = None) -> Path:
    """CIFAR-10 as ``root/{train,test}/<class>/`` plus the subset lists (see the module docstring); returns root."""
    root = Path(root)
    source = given_source(source)
    downloaded = []

    def build(tmp: Path) -> str:
        src = source
        if src is None:
            default = shared_data() / 'cifar10' / 'cifar10_jpg.tar.xz'
            src = default if default.is_file() else None
        if src is None:
            archive = fetch_verified(root / CIFAR10_ARCHIVE, CIFAR10_URL, CIFAR10_MD5, CIFAR10_CHECKSUM_SOURCE)
            convert_official(archive, tmp)
            downloaded.append(archive)
            return CIFAR10_URL
        if src.is_dir():
            raise PrepareError(f'--source {src} is a folder: give a tarball of train/<class>/ and test/<class>/, '
                               f'or the official {CIFAR10_ARCHIVE}')
        if src.name == CIFAR10_ARCHIVE:  # the official pickles: checked before unpickling, like a download
            verify_md5(src, CIFAR10_MD5, CIFAR10_CHECKSUM_SOURCE, given=True)
            convert_official(src, tmp)
        else:
            unpack_folder_tarball(src, tmp)
        return str(src)

    counts = ensure_prepared(root, 'cifar10', CIFAR10_PARTS, cifar10_counts, build)
    for archive in downloaded:
        archive.unlink()
    write_subsets(root)
    print(f'CIFAR-10 ready in {root}: {counts["train"]} train / {counts["test"]} test images', flush=True)
    return root


# ---------------------------------------------------------------------------------------------- coco128

COCO128_PARTS = ('train2017', 'val2017', 'annotations')


def coco128_counts(root: Path) -> dict:
    """Image counts, or IncompleteDataError unless both annotation files parse and every image they list is there."""
    counts = {}
    for split in COCO128_PARTS[:2]:
        ann = root / 'annotations' / f'instances_{split}.json'
        try:
            listed = {image['file_name'] for image in json.loads(ann.read_text())['images']}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IncompleteDataError(f'{ann} is missing or unreadable ({exc.__class__.__name__})') from None
        present = {p.name for p in (root / split).glob('*.jpg')}
        if not present or listed - present:
            raise IncompleteDataError(f'{root / split} lacks {len(listed - present) or "all"} of the images {ann.name} '
                                      f'lists')
        counts[split] = len(present)
    return counts


# COCO's bucket (images.cocodataset.org is an alias of it) over https; the images' own coco_url fields say http.
COCO_BUCKET = 'https://s3.amazonaws.com/images.cocodataset.org'
COCO_ANNOTATIONS_URL = f'{COCO_BUCKET}/annotations/annotations_trainval2017.zip'
# cocodataset.org publishes no checksum; this md5 is the bucket's ETag for the zip (252,907,541 bytes) and the value
# the public loaders pin, e.g. PaddlePaddle/PaddleDetection's reader test (COCO_ANNO_MD5SUM).
COCO_ANNOTATIONS_MD5 = 'f4bbac642086de4f52a3fdda2de5fa2c'
COCO_ANNOTATIONS_CHECKSUM_SOURCE = 'the bucket ETag; PaddleDetection COCO_ANNO_MD5SUM'
COCO_ANNOTATIONS_ARCHIVE = 'annotations_trainval2017.zip'
COCO128_IMAGES = 128


def first_images(instances: dict, count: int | None = None) -> dict:
    """A COCO instances dict cut to its first ``count`` (default COCO128_IMAGES) images by file name, with their
    annotations (boxes, polygons and crowd regions as they are), every category and the licences: how coco128 is
    made from COCO 2017."""
    images = sorted(instances['images'], key=lambda image: image['file_name'])[:count or COCO128_IMAGES]
    kept = {image['id'] for image in images}
    return {**instances, 'images': images,
            'annotations': [ann for ann in instances['annotations'] if ann['image_id'] in kept]}


def check_image(path: Path, width: int, height: int) -> None:
    """Refuse a fetched image that is not a JPEG of the size its (checksummed) annotation records: the bucket
    publishes no per-image checksum, so a truncated or substituted file is caught here."""
    with open(path, 'rb') as f:
        head = f.read(3)
    size = None
    if head == b'\xff\xd8\xff':
        try:
            from PIL import Image
        except ImportError:  # without Pillow the JPEG signature is all that is checked
            return
        try:
            with Image.open(path) as image:
                image.load()
                size = image.size
        except OSError:
            size = None
    if size != (width, height):
        raise IncompleteDataError(f'{path.name} from COCO is not a whole {width}x{height} JPEG; re-run to fetch it '
                                  f'again')


def download_coco128(root: Path, tmp: Path) -> None:
    """coco128 from COCO's official bucket into ``tmp`` (see the module docstring)."""
    archive = fetch_verified(root / COCO_ANNOTATIONS_ARCHIVE, COCO_ANNOTATIONS_URL, COCO_ANNOTATIONS_MD5,
                             COCO_ANNOTATIONS_CHECKSUM_SOURCE)
    cuts = {}
    with zipfile.ZipFile(archive) as zf:
        for split in COCO128_PARTS[:2]:
            with zf.open(f'annotations/instances_{split}.json') as f:
                cuts[split] = first_images(json.load(f))
    (tmp / 'annotations').mkdir(parents=True, exist_ok=True)
    progress = Progress(sum(len(cut['images']) for cut in cuts.values()), f'fetching coco128 from {COCO_BUCKET}')
    for split, cut in cuts.items():
        (tmp / 'annotations' / f'instances_{split}.json').write_text(json.dumps(cut))
        (tmp / split).mkdir(exist_ok=True)
        for image in cut['images']:
            target = member_target(image['file_name'], (tmp / split).resolve(), archive)  # a name from the json
            urllib.request.urlretrieve(f'{COCO_BUCKET}/{split}/{image["file_name"]}', target)
            check_image(target, image['width'], image['height'])
            progress.update()
    progress.close()
    archive.unlink()


def prepare_coco128(root: Path, source: Path | None = None) -> Path:
    """coco128 as ``root/{train2017,val2017,annotations}`` (see the module docstring); returns root."""
    root = Path(root)
    source = given_source(source)

    def build(tmp: Path) -> str:
        src = source
        if src is None:
            default = shared_data() / 'coco128' / 'coco128.tar'
            src = default if default.is_file() else None
        if src is None:
            download_coco128(root, tmp)
            return COCO_BUCKET
        if not src.is_file():
            raise PrepareError(f'--source {src}: expected the coco128 tarball')
        print(f'unpacking {src} into {root} ...', flush=True)

        def rename(name: str) -> str | None:
            parts = name.split('/')
            if parts[0] == 'coco128':  # the tarball's top folder
                parts = parts[1:]
            return '/'.join(parts) if parts and parts[0] in COCO128_PARTS else None

        extract_tar(src, tmp, rename)
        return str(src)

    counts = ensure_prepared(root, 'coco128', COCO128_PARTS, coco128_counts, build)
    print(f'coco128 ready in {root}: {counts["train2017"]} train2017 / {counts["val2017"]} val2017 images', flush=True)
    return root


# ---------------------------------------------------------------------------------------------- Tiny-ImageNet

TINY_IMAGENET_URL = 'https://cs231n.stanford.edu/tiny-imagenet-200.zip'
# cs231n publishes no checksum beside the zip; this is the md5 that the public loaders pin for it (e.g.
# ContinualAI/avalanche, avalanche/benchmarks/datasets/tiny_imagenet/tiny_imagenet.py, TinyImagenet.md5).
TINY_IMAGENET_MD5 = '90528d7ca1a48142e341f4ef8d21d0de'
TINY_IMAGENET_CHECKSUM_SOURCE = 'ContinualAI/avalanche tiny_imagenet.py (TinyImagenet.md5)'
TINY_IMAGENET_ARCHIVE = 'tiny-imagenet-200.zip'
TINY_IMAGENET_PARTS = ('train', 'val', 'test', 'wnids.txt', 'words.txt', 'meta')
TINY_PREFIX = 'tiny-imagenet-200/'


def tiny_imagenet_val(root: Path) -> list[tuple[str, str]]:
    """``(file, wnid)`` of the validation images present (the shared parts may carry only some of them)."""
    ann = root / 'val' / 'val_annotations.txt'
    if not ann.is_file():
        raise IncompleteDataError(f'{ann} is missing')
    labelled = [(name, rest[0]) for name, *rest in (line.split('\t') for line in ann.read_text().splitlines()) if rest]
    present = {p.name for p in (root / 'val' / 'images').glob('*.JPEG')}
    unlabelled = sorted(present - {name for name, _ in labelled})
    if unlabelled:
        raise IncompleteDataError(f'{ann} has no line for {len(unlabelled)} image(s), e.g. {unlabelled[0]}')
    return [(name, wnid) for name, wnid in labelled if name in present]  # in the file's order, as before


def tiny_imagenet_counts(root: Path) -> dict:
    """Counts, or IncompleteDataError: train and val must hold the same classes, none empty, and each split's
    classes equally many images (500 / 50 officially, 50 / 25 per shared part), so a part cut short shows."""
    if not (root / 'train').is_dir():
        raise IncompleteDataError(f'{root / "train"} is missing')
    train = {p.name: sum(1 for _ in (p / 'images').glob('*.JPEG')) for p in (root / 'train').iterdir() if p.is_dir()}
    val = {}
    for _, wnid in tiny_imagenet_val(root):
        val[wnid] = val.get(wnid, 0) + 1
    class_sets_agree({'train': set(train), 'val': set(val)}, str(root))
    for split, sizes in (('train', train), ('val', val)):
        if not sizes or min(sizes.values()) == 0 or len(set(sizes.values())) > 1:
            shown = sorted(set(sizes.values()))[:5]
            raise IncompleteDataError(f'{root / split}: empty or uneven classes (images per class: {shown})')
    return {'classes': len(train), 'train': sum(train.values()), 'val': sum(val.values())}


def prepare_tiny_imagenet(root: Path, source: Path | None = None) -> Path:
    """Tiny-ImageNet-200 in its original layout, plus ``meta/val.txt`` (``images/<file> <label>`` lines, labels in
    the sorted-wnid order that CustomDataset gives the train folders).

    From ``--source`` (a folder of ``*.tar.gz`` parts, default the shared one, whose parts unpack under
    ``tiny-imagenet-200/``; or the official zip) or, elsewhere, the official zip (downloaded). A zip, given or
    downloaded, must match the official md5.
    """
    root = Path(root)
    source = given_source(source)
    downloaded = []

    def strip(name: str) -> str | None:
        return name[len(TINY_PREFIX):] if name.startswith(TINY_PREFIX) else None

    def build(tmp: Path) -> str:
        src = source
        if src is None:
            default = shared_data() / 'tiny-imagenet-200'
            src = default if default.is_dir() and any(default.glob('*.tar.gz')) else None
        if src is None:
            archive = fetch_verified(root / TINY_IMAGENET_ARCHIVE, TINY_IMAGENET_URL, TINY_IMAGENET_MD5,
                                     TINY_IMAGENET_CHECKSUM_SOURCE)
            print(f'unpacking {archive} ...', flush=True)
            extract_zip(archive, tmp, TINY_PREFIX)
            downloaded.append(archive)
            return TINY_IMAGENET_URL
        if src.is_dir():
            parts = sorted(src.glob('*.tar.gz'))
            if not parts:
                raise FileNotFoundError(f'--source {src} holds no *.tar.gz parts')
            for part in parts:
                print(f'unpacking {part} ...', flush=True)
                extract_tar(part, tmp, strip)
            return f'{src}: {", ".join(part.name for part in parts)}'
        if src.suffix == '.zip':
            verify_md5(src, TINY_IMAGENET_MD5, TINY_IMAGENET_CHECKSUM_SOURCE, given=True)
            print(f'unpacking {src} ...', flush=True)
            extract_zip(src, tmp, TINY_PREFIX)
            return str(src)
        raise PrepareError(f'--source {src}: expected the official {TINY_IMAGENET_ARCHIVE} or a folder of *.tar.gz '
                           f'parts')

    counts = ensure_prepared(root, 'tiny-imagenet', TINY_IMAGENET_PARTS, tiny_imagenet_counts, build)
    for archive in downloaded:
        archive.unlink()
    wnids = sorted(p.name for p in (root / 'train').iterdir() if p.is_dir())
    label = {wnid: i for i, wnid in enumerate(wnids)}
    lines = [f'images/{name} {label[wnid]}' for name, wnid in tiny_imagenet_val(root)]
    (root / 'meta').mkdir(exist_ok=True)
    (root / 'meta' / 'val.txt').write_text('\n'.join(lines) + '\n')
    (root / 'meta' / 'classes.txt').write_text('\n'.join(wnids) + '\n')
    print(f'Tiny-ImageNet ready in {root}: {len(wnids)} classes, {counts["train"]} train / {len(lines)} val images',
          flush=True)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('dataset', choices=['cifar10', 'coco128', 'tiny-imagenet'])
    parser.add_argument('--root', type=Path, default=None, help='default: data/<dataset> in the repository')
    parser.add_argument('--source', type=Path, default=None,
                        help='a copy you already have instead of the download: the official archive, or a tarball '
                        'of the folder layout (tiny-imagenet: a folder of *.tar.gz parts or the zip)')
    args = parser.parse_args(argv)
    prepare = {'cifar10': prepare_cifar10, 'coco128': prepare_coco128, 'tiny-imagenet': prepare_tiny_imagenet}
    default_root = {'tiny-imagenet': 'tiny-imagenet-200'}.get(args.dataset, args.dataset)
    try:
        prepare[args.dataset](args.root or REPO / 'data' / default_root, args.source)
    except (PrepareError, FileNotFoundError) as exc:  # the user's to fix: a message, not a traceback
        raise SystemExit(f'prepare_data.py {args.dataset}: error: {exc}') from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, lzma.LZMAError) as exc:  # downloads are md5-checked
        said = (str(exc).splitlines() or [''])[0].rstrip(':')  # tarfile lists every method it tried
        raise SystemExit(f'prepare_data.py {args.dataset}: error: an archive could not be read ({type(exc).__name__}: '
                         f'{said}): {args.source or "the download"} is damaged (cut short?) or not the archive this '
                         'dataset needs; give the right file as --source (see --help)') from exc
    except (NotADirectoryError, FileExistsError) as exc:
        raise SystemExit(f'prepare_data.py {args.dataset}: error: {exc}: --root must be a folder, or a path where '
                         'one can be made') from exc
    except urllib.error.URLError as exc:  # no network: urllib's traceback named neither the dataset nor a way round
        raise SystemExit(f'prepare_data.py {args.dataset}: error: the download failed ({exc.reason}). Download the '
                         'archive on a machine that can reach it (the URL printed above) and give it with --source '
                         'FILE (see --help)') from exc


if __name__ == '__main__':
    main()
