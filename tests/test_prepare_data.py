"""tools/prepare_data.py against hostile or broken inputs: archive members that escape --root, downloads that fail
their checksum, a --source that does not exist, extractions cut short. Tiny synthetic archives only, never the network.
"""
import functools
import hashlib
import importlib.util
import io
import json
import pickle
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location('prepare_data', REPO / 'tools' / 'prepare_data.py')
prepare_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_data)

CLASSES = prepare_data.CIFAR10_CLASSES
WNIDS = ('n01443537', 'n01629819')


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, and no shared data folder to fall back on, unless a test installs its own download."""
    def no_network(url, filename=None, *args, **kwargs):
        raise AssertionError(f'the test tried to download {url}')
    monkeypatch.setattr(prepare_data.urllib.request, 'urlretrieve', no_network)
    (tmp_path / 'no-shared-data').mkdir()
    monkeypatch.setenv('KDPLUG_SHARED_DATA', str(tmp_path / 'no-shared-data'))


def serve(monkeypatch, archive: Path) -> list:
    """Make a "download" of any URL write ``archive``; returns the list of URLs asked for."""
    urls = []

    def fake_urlretrieve(url, filename):
        urls.append(url)
        shutil.copyfile(archive, filename)
    monkeypatch.setattr(prepare_data.urllib.request, 'urlretrieve', fake_urlretrieve)
    return urls


def outcome(call, *args) -> Exception | None:
    """What ``call(*args)`` raised, so that a test can first check what it left on disk."""
    try:
        call(*args)
    except Exception as exc:
        return exc
    return None


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@functools.lru_cache
def jpeg() -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new('RGB', (4, 4), (200, 30, 90)).save(buffer, 'JPEG')
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_folder_tarball(path: Path, train: int = 3, test: int = 2) -> Path:
    """The JPEG folder layout of the shared tarball, ``train`` / ``test`` images per class."""
    with tarfile.open(path, 'w:gz') as tar:
        for split, n in (('train', train), ('test', test)):
            for cls in CLASSES:
                for i in range(n):
                    add(tar, f'{split}/{cls}/{i:04d}.jpg', jpeg())
    return path


def cifar_folder(root: Path, train: int, test: int, test_classes=CLASSES) -> Path:
    for split, n, classes in (('train', train, CLASSES), ('test', test, test_classes)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / cls / f'{i:04d}.jpg').write_bytes(jpeg())
    return root


def official_cifar_archive(path: Path, batch) -> Path:
    """A tarball laid out like cifar-10-python.tar.gz whose six batches are ``batch(name)`` pickled."""
    with tarfile.open(path, 'w:gz') as tar:
        for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
            add(tar, f'cifar-10-batches-py/{name}', pickle.dumps(batch(name), protocol=3))
    return path


class Payload:
    """Unpickling this creates a file: what a planted archive would do with a shell command."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


def tiny_files(val_classes=WNIDS) -> dict:
    """A two-class Tiny-ImageNet in its zip layout: 2 train images per class, 1 val image per class of val_classes."""
    files = {}
    for wnid in WNIDS:
        for i in range(2):
            files[f'tiny-imagenet-200/train/{wnid}/images/{wnid}_{i}.JPEG'] = jpeg()
    lines = []
    for i, wnid in enumerate(val_classes):
        files[f'tiny-imagenet-200/val/images/val_{i}.JPEG'] = jpeg()
        lines.append(f'val_{i}.JPEG\t{wnid}\t0\t0\t63\t63')
    files['tiny-imagenet-200/val/val_annotations.txt'] = ('\n'.join(lines) + '\n').encode()
    files['tiny-imagenet-200/wnids.txt'] = ('\n'.join(WNIDS) + '\n').encode()
    return files


def write_zip(path: Path, files: dict, extra: tuple = ()) -> Path:
    with zipfile.ZipFile(path, 'w') as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return path


def symlink_member(name: str, target: str) -> tuple:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so that the mode bits count
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


# ------------------------------------------------------------------------------------------ archive members

@pytest.mark.parametrize('member', ['tiny-imagenet-200/../evil.txt', 'tiny-imagenet-200/../../evil.txt',
                                    '../evil.txt', 'ABSOLUTE', 'SYMLINK'])
def test_zip_members_that_escape_root_are_refused(tmp_path, monkeypatch, member):
    root = tmp_path / 'data' / 'tiny-imagenet-200'
    root.mkdir(parents=True)
    absolute = tmp_path / 'absolute_evil.txt'
    extra = {'ABSOLUTE': [(str(absolute), b'planted')],
             'SYMLINK': [symlink_member('tiny-imagenet-200/train/evil_link', '/etc/passwd')]}.get(member)
    # a zip already in place, as a download would leave it; its checksum is made to pass so the members are reached
    archive = write_zip(root / 'tiny-imagenet-200.zip', tiny_files(), extra or [(member, b'planted')])
    monkeypatch.setattr(prepare_data, 'TINY_IMAGENET_MD5', md5(archive), raising=False)

    error = outcome(prepare_data.prepare_tiny_imagenet, root)
    assert not list(tmp_path.rglob('*evil*')) and not absolute.exists()
    assert isinstance(error, prepare_data.UnsafeArchiveError) and 'refusing member' in str(error)
    assert sorted(p.name for p in root.iterdir()) == ['tiny-imagenet-200.zip']  # nothing unpacked, nothing marked


@pytest.mark.parametrize('member', ['../evil.txt', 'train/../../evil.txt', 'ABSOLUTE'])
def test_tarball_members_that_escape_root_are_refused(tmp_path, member):
    absolute = tmp_path / 'absolute_evil.txt'
    member = str(absolute) if member == 'ABSOLUTE' else member
    source = tmp_path / 'cifar10_jpg.tar'
    with tarfile.open(source, 'w') as tar:
        for split in ('train', 'test'):
            for cls in CLASSES:
                add(tar, f'{split}/{cls}/0000.jpg', jpeg())
        add(tar, member, b'planted')
    root = tmp_path / 'data' / 'cifar10'
    error = outcome(prepare_data.prepare_cifar10, root, source)
    assert not list(tmp_path.rglob('*evil*')) and not absolute.exists()
    assert isinstance(error, prepare_data.UnsafeArchiveError) and member in str(error)
    assert not root.exists() or not any(root.iterdir())


# ------------------------------------------------------------------------------------------ checksums

@pytest.mark.parametrize('in_place', [False, True], ids=['downloaded', 'already-in-place'])
def test_cifar10_archive_with_a_wrong_checksum_is_refused_before_unpickling(tmp_path, monkeypatch, capsys, in_place):
    sentinel = tmp_path / 'payload-ran'
    planted = official_cifar_archive(tmp_path / 'planted.tar.gz', lambda name: {b'data': Payload(sentinel)})
    root = tmp_path / 'cifar10'
    if in_place:
        root.mkdir()
        shutil.copyfile(planted, root / 'cifar-10-python.tar.gz')
    else:
        urls = serve(monkeypatch, planted)

    error = outcome(prepare_data.prepare_cifar10, root)
    assert not sentinel.exists()
    assert isinstance(error, prepare_data.ChecksumError)
    message = str(error)
    assert prepare_data.CIFAR10_MD5 in message and md5(planted) in message
    assert 'cifar-10-python.tar.gz' in message and 'delete' in message
    assert not (root / 'train').exists() and not (root / prepare_data.MARKER).exists()
    if not in_place:
        assert urls == ['https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz']


def test_a_pickle_that_calls_code_is_refused_even_with_the_right_checksum(tmp_path, monkeypatch):
    sentinel = tmp_path / 'payload-ran'
    planted = official_cifar_archive(tmp_path / 'planted.tar.gz', lambda name: {b'data': Payload(sentinel)})
    serve(monkeypatch, planted)
    monkeypatch.setattr(prepare_data, 'CIFAR10_MD5', md5(planted), raising=False)
    error = outcome(prepare_data.prepare_cifar10, tmp_path / 'cifar10')
    assert not sentinel.exists()
    assert isinstance(error, pickle.UnpicklingError) and 'refusing' in str(error)


def test_python2_batches_load_with_the_restricted_unpickler():
    """The official batches are Python 2 pickles (numpy.core.multiarray._reconstruct, byte strings): written here by
    hand with those opcodes, since the real archive is not downloaded in tests."""
    batch = (b'\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85'
             b'U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff'
             b'\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tbU\x06labelsq\x07]q\x08(K\x01K\x02eu.')
    loaded = prepare_data._BatchUnpickler(io.BytesIO(batch), encoding='bytes').load()
    assert loaded[b'labels'] == [1, 2] and loaded[b'data'].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert str(loaded[b'data'].dtype) == 'uint8'


def test_a_verified_official_archive_is_converted(tmp_path, monkeypatch):
    import numpy as np

    def batch(name):  # one image per class per batch, its pixels the label
        labels = list(range(10))
        return {b'labels': labels, b'data': np.repeat(np.arange(10, dtype=np.uint8)[:, None], 3072, axis=1)}
    archive = official_cifar_archive(tmp_path / 'official.tar.gz', batch)
    urls = serve(monkeypatch, archive)
    monkeypatch.setattr(prepare_data, 'CIFAR10_MD5', md5(archive), raising=False)
    root = prepare_data.prepare_cifar10(tmp_path / 'cifar10')
    assert urls == [prepare_data.CIFAR10_URL]
    assert len(list((root / 'train').glob('*/*.png'))) == 50 and len(list((root / 'test').glob('*/*.png'))) == 10
    assert json.loads((root / prepare_data.MARKER).read_text())['counts'] == {'train': 50, 'test': 10}
    assert not (root / 'cifar-10-python.tar.gz').exists()


def test_a_tiny_imagenet_source_zip_with_a_wrong_checksum_is_refused(tmp_path):
    archive = write_zip(tmp_path / 'tiny-imagenet-200.zip', tiny_files())
    with pytest.raises(SystemExit, match=f'md5 checksum {md5(archive)} does not match') as error:
        prepare_data.main(['tiny-imagenet', '--root', str(tmp_path / 'tiny'), '--source', str(archive)])
    assert prepare_data.TINY_IMAGENET_MD5 in str(error.value) and 'leave --source out' in str(error.value)
    assert not (tmp_path / 'tiny' / 'train').exists()


# ------------------------------------------------------------------------------------------ --source

@pytest.mark.parametrize('dataset', ['cifar10', 'coco128', 'tiny-imagenet'])
def test_a_source_that_does_not_exist_is_an_error(tmp_path, dataset):
    missing = tmp_path / 'typo' / 'cifar10_jpg.tar.xz'
    with pytest.raises(SystemExit, match='does not exist') as error:
        prepare_data.main([dataset, '--root', str(tmp_path / 'root'), '--source', str(missing)])
    assert str(missing) in str(error.value)
    with pytest.raises(FileNotFoundError):
        prepare_data.prepare_cifar10(tmp_path / 'root', missing)


def test_a_source_that_is_not_an_archive_or_a_root_that_is_a_file_is_named(tmp_path):
    """A bogus or cut-short --source, or a --root that is a file: tarfile's / lzma's / the OS's bare tracebacks."""
    bogus = tmp_path / 'cifar10_jpg.tar.xz'
    bogus.write_bytes(b'not an archive at all')
    with pytest.raises(SystemExit, match=r'an archive could not be read \(ReadError.*is damaged \(cut short\?\) or not '
                                         r'the archive this dataset needs; give the right file as --source'):
        prepare_data.main(['cifar10', '--root', str(tmp_path / 'root'), '--source', str(bogus)])
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode='w:xz') as tar:
        data = bytes(5000)
        info = tarfile.TarInfo('train/cat/0000.jpg')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cut = tmp_path / 'cut.tar.xz'
    cut.write_bytes(archive.getvalue()[:len(archive.getvalue()) // 2])
    with pytest.raises(SystemExit, match=r'an archive could not be read \((EOFError|LZMAError|ReadError)'):
        prepare_data.main(['cifar10', '--root', str(tmp_path / 'root2'), '--source', str(cut)])
    (tmp_path / 'afile').write_text('')
    with pytest.raises(SystemExit, match='--root must be a folder'):
        prepare_data.main(['cifar10', '--root', str(tmp_path / 'afile'), '--source', str(bogus)])


def test_tiny_imagenet_source_zip_is_used_not_downloaded(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / 'tiny-imagenet-200.zip', tiny_files())
    monkeypatch.setattr(prepare_data, 'TINY_IMAGENET_MD5', md5(archive), raising=False)
    root = tmp_path / 'tiny'
    prepare_data.main(['tiny-imagenet', '--root', str(root), '--source', str(archive)])
    assert (root / 'meta' / 'val.txt').read_text().split('\n') == ['images/val_0.JPEG 0', 'images/val_1.JPEG 1', '']
    assert (root / 'meta' / 'classes.txt').read_text().split() == list(WNIDS)
    assert json.loads((root / prepare_data.MARKER).read_text())['counts'] == {'classes': 2, 'train': 4, 'val': 2}
    assert archive.exists()  # the user's file stays


def test_tiny_imagenet_source_folder_of_parts(tmp_path):
    parts = tmp_path / 'parts'
    parts.mkdir()
    files = tiny_files()
    for part, keep in (('train_part0', '/train/'), ('val_part0', '/val/')):
        with tarfile.open(parts / f'{part}.tar.gz', 'w:gz') as tar:
            for name, data in files.items():
                if keep in name:
                    add(tar, name, data)
    root = prepare_data.prepare_tiny_imagenet(tmp_path / 'tiny', parts)
    assert (root / 'meta' / 'val.txt').read_text().split('\n') == ['images/val_0.JPEG 0', 'images/val_1.JPEG 1', '']


def test_tiny_imagenet_val_lacking_a_class_is_an_error(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / 'tiny-imagenet-200.zip', tiny_files(val_classes=WNIDS[:1]))
    monkeypatch.setattr(prepare_data, 'TINY_IMAGENET_MD5', md5(archive), raising=False)
    with pytest.raises(prepare_data.IncompleteDataError, match=f'val lacks 1 class.*{WNIDS[1]}'):
        prepare_data.prepare_tiny_imagenet(tmp_path / 'tiny', archive)
    assert not (tmp_path / 'tiny' / 'train').exists()


# ------------------------------------------------------------------------------------------ interrupted extractions

@pytest.mark.parametrize('damage', ['test classes missing', 'a class cut short', 'no test folder'])
def test_a_half_extracted_cifar10_folder_is_redone(tmp_path, monkeypatch, capsys, damage):
    root = tmp_path / 'cifar10'
    if damage == 'test classes missing':
        cifar_folder(root, train=3, test=2, test_classes=CLASSES[:2] + CLASSES[4:])  # no bird, no cat
    else:
        cifar_folder(root, train=3, test=2)
        if damage == 'a class cut short':
            (root / 'test' / 'truck' / '0001.jpg').unlink()
        else:
            shutil.rmtree(root / 'test')
    (root / 'meta').mkdir()
    (root / 'meta' / 'test_10.txt').write_text('frog/0000.jpg 1\n')  # labels from the partial class set
    source = cifar_folder_tarball(tmp_path / 'cifar10_jpg.tar.gz', train=4, test=2)
    monkeypatch.setattr(prepare_data, 'SUBSETS', {'train': (20,), 'test': (10,)})

    prepare_data.prepare_cifar10(root, source)
    out = capsys.readouterr().out
    assert 'incomplete' in out and 'from scratch' in out
    assert sorted(p.name for p in (root / 'test').iterdir()) == list(CLASSES)
    assert json.loads((root / prepare_data.MARKER).read_text())['counts'] == {'train': 40, 'test': 20}
    assert 'ready' in out and '40 train / 20 test' in out
    for split, n in (('train', 20), ('test', 10)):
        lines = (root / 'meta' / f'{split}_{n}.txt').read_text().split()
        pairs = list(zip(lines[::2], lines[1::2]))
        assert len(pairs) == n and all(int(label) == CLASSES.index(path.split('/')[0]) for path, label in pairs)
    assert not (root / prepare_data.PARTIAL).exists()


def test_an_old_complete_folder_is_accepted_and_marked(tmp_path, capsys):
    root = cifar_folder(tmp_path / 'cifar10', train=2, test=1)  # no source, no download: it must be used as it is
    prepare_data.prepare_cifar10(root)
    marker = json.loads((root / prepare_data.MARKER).read_text())
    assert marker['counts'] == {'train': 20, 'test': 10} and 'found in place' in marker['source']
    assert 'from scratch' not in capsys.readouterr().out


def test_a_marked_folder_that_lost_files_is_redone(tmp_path, capsys):
    source = cifar_folder_tarball(tmp_path / 'cifar10_jpg.tar.gz', train=2, test=1)
    root = prepare_data.prepare_cifar10(tmp_path / 'cifar10', source)
    (root / 'train' / 'cat' / '0000.jpg').unlink()
    capsys.readouterr()
    prepare_data.prepare_cifar10(root, source)
    assert 'from scratch' in capsys.readouterr().out
    assert (root / 'train' / 'cat' / '0000.jpg').exists()


def test_a_source_that_is_itself_incomplete_is_refused_and_root_kept(tmp_path):
    source = tmp_path / 'partial.tar.gz'
    with tarfile.open(source, 'w:gz') as tar:
        for split in ('train', 'test'):
            for cls in CLASSES[:8]:
                add(tar, f'{split}/{cls}/0000.jpg', jpeg())
    with pytest.raises(prepare_data.IncompleteDataError, match='8 class folders, not 10'):
        prepare_data.prepare_cifar10(tmp_path / 'cifar10', source)
    assert sorted(p.name for p in (tmp_path / 'cifar10').iterdir()) == []


def test_subset_lists_refuse_splits_with_different_classes(tmp_path):
    root = cifar_folder(tmp_path / 'cifar10', train=2, test=1, test_classes=CLASSES[:2] + CLASSES[4:])
    with pytest.raises(prepare_data.IncompleteDataError, match='test lacks 2 class.*bird, cat'):
        prepare_data.write_subsets(root)


def test_coco128_with_a_truncated_annotation_file_is_redone(tmp_path, capsys):
    source = tmp_path / 'coco128.tar'
    with tarfile.open(source, 'w') as tar:
        for split in ('train2017', 'val2017'):
            add(tar, f'coco128/{split}/000000000001.jpg', jpeg())
            ann = {'images': [{'id': 1, 'file_name': '000000000001.jpg'}], 'annotations': [], 'categories': []}
            add(tar, f'coco128/annotations/instances_{split}.json', json.dumps(ann).encode())
    root = prepare_data.prepare_coco128(tmp_path / 'coco128', source)
    assert json.loads((root / prepare_data.MARKER).read_text())['counts'] == {'train2017': 1, 'val2017': 1}
    (root / prepare_data.MARKER).unlink()  # as an interrupted run of an older version would leave it
    ann = root / 'annotations' / 'instances_val2017.json'
    ann.write_text(ann.read_text()[:20])
    capsys.readouterr()
    prepare_data.prepare_coco128(root, source)
    assert 'from scratch' in capsys.readouterr().out
    assert json.loads(ann.read_text())['images'][0]['file_name'] == '000000000001.jpg'


# ---------------------------------------------------------------------------------------------- coco128 from COCO

COCO_SAMPLES = REPO / 'tests' / 'data' / 'coco128'


def coco_bucket(tmp_path: Path, monkeypatch, damaged: str | None = None) -> list:
    """COCO's bucket, offline: an annotations zip holding the shipped samples' annotations (COCO's own for train),
    the shipped images behind their bucket URLs (``damaged``: served cut short). Returns the URLs asked for."""
    archive = tmp_path / 'served' / 'annotations_trainval2017.zip'
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, 'w') as zf:
        for split in ('train2017', 'val2017'):
            zf.write(COCO_SAMPLES / 'annotations' / f'instances_{split}.json', f'annotations/instances_{split}.json')
    monkeypatch.setattr(prepare_data, 'COCO_ANNOTATIONS_MD5', md5(archive))
    urls = []

    def fake_urlretrieve(url, filename):
        urls.append(url)
        if url == prepare_data.COCO_ANNOTATIONS_URL:
            shutil.copyfile(archive, filename)
            return
        split, name = url.split('/')[-2:]
        data = (COCO_SAMPLES / split / name).read_bytes()
        Path(filename).write_bytes(data[:len(data) // 2] if name == damaged else data)
    monkeypatch.setattr(prepare_data.urllib.request, 'urlretrieve', fake_urlretrieve)
    return urls


def test_coco128_is_the_first_images_by_file_name_with_their_annotations():
    instances = json.loads((COCO_SAMPLES / 'annotations' / 'instances_train2017.json').read_text())
    cut = prepare_data.first_images(instances, 2)
    # the file lists 250 first; by file name 9 and 25 come first
    assert [image['file_name'] for image in cut['images']] == ['000000000009.jpg', '000000000025.jpg']
    assert {ann['image_id'] for ann in cut['annotations']} == {9, 25}
    assert len(cut['annotations']) == sum(ann['image_id'] in (9, 25) for ann in instances['annotations'])
    assert cut['categories'] == instances['categories'] and cut['licenses'] == instances['licenses']


def test_coco128_without_a_source_comes_from_the_official_bucket(tmp_path, monkeypatch):
    urls = coco_bucket(tmp_path, monkeypatch)
    monkeypatch.setattr(prepare_data, 'COCO128_IMAGES', 2)
    root = prepare_data.prepare_coco128(tmp_path / 'coco128')
    assert urls[0] == 'https://s3.amazonaws.com/images.cocodataset.org/annotations/annotations_trainval2017.zip'
    assert all(url.startswith('https://s3.amazonaws.com/images.cocodataset.org/') for url in urls)
    assert sorted(p.name for p in (root / 'train2017').iterdir()) == ['000000000009.jpg', '000000000025.jpg']
    assert sorted(p.name for p in (root / 'val2017').iterdir()) == ['000000000139.jpg', '000000000285.jpg']
    for split in ('train2017', 'val2017'):
        listed = json.loads((root / 'annotations' / f'instances_{split}.json').read_text())['images']
        assert {image['file_name'] for image in listed} == {p.name for p in (root / split).iterdir()}
        for name in (root / split).iterdir():
            assert name.read_bytes() == (COCO_SAMPLES / split / name.name).read_bytes()
    assert not (root / 'annotations_trainval2017.zip').exists()  # 253 MB: gone once cut
    assert json.loads((root / prepare_data.MARKER).read_text())['source'] == prepare_data.COCO_BUCKET


def test_a_coco_image_that_does_not_decode_at_its_size_is_refused(tmp_path, monkeypatch):
    coco_bucket(tmp_path, monkeypatch, damaged='000000000025.jpg')
    monkeypatch.setattr(prepare_data, 'COCO128_IMAGES', 2)
    with pytest.raises(prepare_data.IncompleteDataError, match='000000000025.jpg .*not a whole 640x426 JPEG'):
        prepare_data.prepare_coco128(tmp_path / 'coco128')
    assert not (tmp_path / 'coco128' / 'train2017').exists()  # nothing half-made is left in place


@pytest.mark.parametrize('dataset', ['cifar10', 'coco128', 'tiny-imagenet'])
def test_no_network_is_an_error_that_says_how_to_give_the_archive(tmp_path, monkeypatch, dataset):
    """Offline, urllib's URLError traceback named neither the dataset nor --source."""
    import urllib.error

    def unreachable(url, filename=None, *args, **kwargs):
        raise urllib.error.URLError('[Errno -2] Name or service not known')
    monkeypatch.setattr(prepare_data.urllib.request, 'urlretrieve', unreachable)
    with pytest.raises(SystemExit, match=rf'prepare_data.py {dataset}: error: the download failed \(\[Errno -2\] Name '
                                         r'or service not known\).*give it with --source FILE'):
        prepare_data.main([dataset, '--root', str(tmp_path / 'root')])
