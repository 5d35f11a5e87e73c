"""The teacher cache's store (kdplug/teachers/cache_store.py): rows found by (image, recorded view), never by
position alone; incomplete, foreign or mismatched stores refused with the reason; a resumed job keeps its rows."""
import json

import numpy as np
import pytest

from kdplug.teachers.cache_store import TeacherCacheError, TeacherCacheStore, view_layout, view_vector

VIEWS = [{'crop': (oh, ow), 'flip': (flip,)} for oh in range(3) for ow in range(3) for flip in (None, 'horizontal')]
LAYOUT = view_layout(VIEWS[0])


def header(**extra) -> dict:
    return dict(dict(mode='views', slots=len(VIEWS), num_images=4, num_classes=5, dtype='float16', layout=LAYOUT,
                     made_from={'teacher_sha256': 'ab'}), **extra)


def logits_of(index: int, slot: int) -> np.ndarray:
    return np.arange(5, dtype=np.float32) + 100 * index + slot


def filled(path, order=range(4)) -> TeacherCacheStore:
    store = TeacherCacheStore.create(str(path), header())
    for index in order:
        store.write(index, np.stack([logits_of(index, s) for s in range(len(VIEWS))]),
                    np.asarray([view_vector(v, LAYOUT) for v in VIEWS]))
    return store


def test_a_lookup_finds_the_row_of_each_image_and_view(tmp_path):
    filled(tmp_path / 'store').mark_complete()
    store = TeacherCacheStore.open(str(tmp_path / 'store'))
    rng = np.random.default_rng(0)
    picks = [(int(rng.integers(4)), int(rng.integers(len(VIEWS)))) for _ in range(20)]
    got = store.lookup([i for i, _ in picks], [VIEWS[s] for _, s in picks])
    expected = np.stack([logits_of(i, s) for i, s in picks]).astype(np.float16)
    assert got.dtype == np.float16 and np.array_equal(got, expected)


def test_a_view_the_store_does_not_hold_is_an_error_not_a_neighbour(tmp_path):
    filled(tmp_path / 'store').mark_complete()
    store = TeacherCacheStore.open(str(tmp_path / 'store'))
    with pytest.raises(TeacherCacheError, match=r"no view \{'crop': \(7, 0\).*another pipeline"):
        store.lookup([1], [{'crop': (7, 0), 'flip': (None,)}])
    with pytest.raises(TeacherCacheError, match="other transforms|another pipeline"):
        store.lookup([1], [{'crop': (0, 0)}])
    with pytest.raises(TeacherCacheError, match='outside the 4 images.*another dataset'):
        store.lookup([4], [VIEWS[0]])


def test_an_incomplete_store_is_refused_and_a_resumed_job_keeps_what_was_written(tmp_path):
    filled(tmp_path / 'store', order=[0, 1]).flush()  # killed after two images
    with pytest.raises(TeacherCacheError, match='incomplete.*resumes'):
        TeacherCacheStore.open(str(tmp_path / 'store'))
    resumed = TeacherCacheStore.create(str(tmp_path / 'store'), header())
    assert resumed.done.tolist() == [1, 1, 0, 0]
    with pytest.raises(TeacherCacheError, match='2 images are not written'):
        resumed.mark_complete()
    with pytest.raises(TeacherCacheError, match='other settings.*num_classes'):
        TeacherCacheStore.create(str(tmp_path / 'store'), header(num_classes=6))


def test_a_folder_that_is_not_a_store_says_how_to_make_one(tmp_path):
    with pytest.raises(TeacherCacheError, match='not a teacher cache.*cache_teacher.py'):
        TeacherCacheStore.open(str(tmp_path))
    (tmp_path / 'header.json').write_text(json.dumps({'format': 'something else', 'complete': True}))
    with pytest.raises(TeacherCacheError, match="format 'something else'"):
        TeacherCacheStore.open(str(tmp_path))


def test_an_image_of_another_file_or_label_is_refused_and_what_is_not_recorded_is_not_compared(tmp_path):
    """The store keeps each image's file and label(s): a run on another list, subset or split meets an image
    whose file or label differs; a dataset held as arrays records labels only, and is still checked by them."""
    files = [f'train/c{i}/{i}.jpg' for i in range(4)]
    labels = [[i % 3] for i in range(4)]
    store = TeacherCacheStore.create(str(tmp_path / 'files'), header(), files, labels)
    store.check_images([0, 3], ['/elsewhere/c0/0.jpg', 'c3/3.jpg'], [[0], [0]])  # the data root does not matter
    with pytest.raises(TeacherCacheError, match=r"image 1 of this run has the file 'c2/2.jpg'.*'c1/1.jpg'"):
        store.check_images([1], ['c2/2.jpg'], [[1]])
    with pytest.raises(TeacherCacheError, match=r'image 2 of this run has the label \[0\].*\[2\].*another dataset'):
        store.check_images([2], ['c2/2.jpg'], [[0]])
    with pytest.raises(TeacherCacheError, match="image 4 .*'nothing'"):
        store.check_images([4], None, [[1]])
    for name, text in (('not_lists', '{"images": 5}'), ('no_images', '{}'), ('not_json', '{"images": [')):
        damaged = TeacherCacheStore.create(str(tmp_path / name), header(), files, labels)
        (tmp_path / name / 'images.json').write_text(text)  # a TypeError, KeyError, JSON error without the file
        with pytest.raises(TeacherCacheError, match=r'images.json cannot be read .*the store is damaged'):
            damaged.check_images([0], files[:1], labels[:1])
    arrays = TeacherCacheStore.create(str(tmp_path / 'arrays'), header(), None, labels)
    arrays.check_images([1], ['anything.jpg'], [[1]])  # no files recorded: only the labels compared
    with pytest.raises(TeacherCacheError, match='has the label'):
        arrays.check_images([1], None, [[2]])


def test_a_damaged_or_swapped_array_or_a_header_without_its_sizes_is_refused_at_open(tmp_path):
    """Each array must be what the header says (rows = images x views, the class count, the dtype): a truncated
    file, one of another store or a header missing a size is refused with the file and the fix, never read."""
    import shutil
    filled(tmp_path / 'good').mark_complete()
    rows = 4 * len(VIEWS)

    def damaged(name: str, change) -> str:
        path = tmp_path / name
        shutil.copytree(tmp_path / 'good', path)
        change(path)
        return str(path)

    truncated = damaged('truncated', lambda p: (p / 'logits.npy').write_bytes((p / 'logits.npy').read_bytes()[:200]))
    with pytest.raises(TeacherCacheError, match=r'logits.npy cannot be read.*damaged.*cache_teacher.py'):
        TeacherCacheStore.open(truncated)
    empty = damaged('empty', lambda p: (p / 'logits.npy').write_bytes(b''))  # numpy's bare EOFError
    with pytest.raises(TeacherCacheError, match=r'logits.npy cannot be read \(EOFError.*damaged.*cache_teacher.py'):
        TeacherCacheStore.open(empty)
    wider = damaged('wider', lambda p: np.save(p / 'logits.npy', np.zeros((rows, 6), np.float16)))
    with pytest.raises(TeacherCacheError, match=rf'holds float16 \({rows}, 6\), its header says float16 \({rows}, 5\)'):
        TeacherCacheStore.open(wider)
    other_dtype = damaged('dtype', lambda p: np.save(p / 'params.npy', np.zeros((rows, 3), np.int64)))
    with pytest.raises(TeacherCacheError, match=r'params.npy holds int64 .* says int32'):
        TeacherCacheStore.open(other_dtype)

    def without_slots(path):
        header_ = json.loads((path / 'header.json').read_text())
        del header_['slots']
        (path / 'header.json').write_text(json.dumps(header_))
    with pytest.raises(TeacherCacheError, match=r"not a complete store header \(KeyError: 'slots'\)"):
        TeacherCacheStore.open(damaged('no_slots', without_slots))


def test_a_store_the_disk_cannot_hold_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """A memory-mapped write past a full disk would kill the job (SIGBUS) hours in: the store's size is checked
    against the free space, and its files get their blocks when it is made."""
    import errno
    import os
    import shutil
    from collections import namedtuple

    rows = 4 * len(VIEWS)
    size = rows * 5 * 2 + rows * 3 * 4 + 4  # float16 logits, int32 views, uint8 done flags
    usage = namedtuple('usage', 'total used free')
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage(size, 0, size - 1))
    with pytest.raises(TeacherCacheError, match=r'needs 0.0 MiB and .* has 0.0 MiB free.*larger disk'):
        TeacherCacheStore.create(str(tmp_path / 'full'), header())
    assert not (tmp_path / 'full' / 'header.json').exists() and not (tmp_path / 'full' / 'logits.npy').exists()

    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage(size, 0, size))
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(os, 'posix_fallocate', no_space)
    with pytest.raises(TeacherCacheError, match='no space left for .*logits.npy'):
        TeacherCacheStore.create(str(tmp_path / 'filled_meanwhile'), header())
    assert not (tmp_path / 'filled_meanwhile' / 'header.json').exists()  # not a store: nothing will read it


def test_a_copy_of_the_dataset_with_the_same_names_and_other_files_is_refused(tmp_path):
    """Images are matched by their last two path components (the data root may move): a copy whose files have the
    same names and other pixels (another resize or encoding) was served the store's logits without a word. The
    store records each file's fingerprint (size, CRC-32 of its ends); a store without (made before) and a dataset of
    arrays are not compared."""
    files = []
    for root in ('made', 'copy'):
        for i in range(4):
            path = tmp_path / root / f'c{i}' / f'{i}.jpg'
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(100 + i + (root == 'copy' and i == 2) * 7))  # image 2 of the copy differs
            files.append(str(path))
    made, copy = files[:4], files[4:]
    store = TeacherCacheStore.create(str(tmp_path / 'store'), header(), made, [[i] for i in range(4)])
    store.check_images([0, 1, 3], [copy[0], copy[1], copy[3]])  # the same files elsewhere
    with pytest.raises(TeacherCacheError, match=r'image 2 of this run, .*copy/c2/2.jpg, has 109 bytes; the store was '
                                                r'made from a file of 102 bytes under that name: another copy'):
        store.check_images([2], [copy[2]])
    # two files of one size swapped: the audit's copy of CIFAR-10, bird/2588.jpg and deer/2722.jpg
    swapped = [tmp_path / 'swapped' / f'c{i}' / f'{i}.jpg' for i in range(2)]
    for i, path in enumerate(swapped):
        path.parent.mkdir(parents=True)
        path.write_bytes(bytes([1 - i]) * 100)
    two = TeacherCacheStore.create(str(tmp_path / 'store_of_two'), header(), [str(p) for p in swapped], [[0], [1]])
    swapped[0].write_bytes(swapped[1].read_bytes())  # the other image's file, of the same size
    with pytest.raises(TeacherCacheError, match=r'image 0 of this run, .*c0/0.jpg, has other bytes \(CRC-32 \w+\) '
                                                r'than the store\'s file of its size.*files swapped'):
        two.check_images([0], [str(swapped[0])])
    # a large file: its first and last 8 KiB are read, a change in either end is seen
    large = tmp_path / 'large' / 'c0' / '0.jpg'
    large.parent.mkdir(parents=True)
    large.write_bytes(bytes(100_000))
    one = TeacherCacheStore.create(str(tmp_path / 'store_large'), header(), [str(large)], [[0]])
    for offset in (0, 99_999):
        data = bytearray(bytes(100_000))
        data[offset] = 1
        large.write_bytes(bytes(data))
        with pytest.raises(TeacherCacheError, match='has other bytes'):
            one.check_images([0], [str(large)])
    # an older store recorded sizes only: they are compared; one with neither, names only
    images = json.loads((tmp_path / 'store' / 'images.json').read_text())
    images['sizes'] = [int(p.partition(':')[0]) for p in images.pop('fingerprints')]
    (tmp_path / 'store' / 'images.json').write_text(json.dumps(images))
    store._images = None  # read again
    with pytest.raises(TeacherCacheError, match='has 109 bytes; the store was made from a file of 102 bytes'):
        store.check_images([2], [copy[2]])
    del images['sizes']
    (tmp_path / 'store' / 'images.json').write_text(json.dumps(images))
    store._images = None  # read again
    store.check_images([2], [copy[2]])  # an older store: names only
