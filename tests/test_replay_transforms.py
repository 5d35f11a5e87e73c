"""Replayable views (kdplug/transforms/replay.py): on real images, the same seed gives the same pixels as the
transforms they stand in for (mmpretrain's RandomCrop and RandomResizedCrop, mmcv's RandomFlip), and a recorded view
replayed gives the original view bit for bit, whatever the generator's state."""
import copy
from pathlib import Path

import mmcv
import numpy as np
import pytest

from conftest import REPO

CIFAR = sorted((REPO / 'tests' / 'data' / 'cifar10' / 'train').rglob('*.jpg'))[:6]
COCO = sorted((REPO / 'tests' / 'data' / 'coco128' / 'train2017').glob('*.jpg'))


def load(path: Path) -> dict:
    img = mmcv.imread(str(path))
    return dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])


def pipelines():
    """(kdplug's replayable pipeline, the pipeline it stands in for, images) for the configs' two recipes."""
    from mmcv.transforms import RandomFlip
    from mmpretrain.datasets.transforms import RandomCrop, RandomResizedCrop

    from kdplug.transforms.replay import ReplayRandomCrop, ReplayRandomFlip, ReplayRandomResizedCrop
    return {
        'pad-crop-flip (CIFAR)': ([ReplayRandomCrop(crop_size=32, padding=4), ReplayRandomFlip(prob=0.5)],
                                  [RandomCrop(crop_size=32, padding=4), RandomFlip(prob=0.5)], CIFAR),
        'resized-crop-flip (ImageNet)': ([ReplayRandomResizedCrop(scale=64), ReplayRandomFlip(prob=0.5)],
                                         [RandomResizedCrop(scale=64), RandomFlip(prob=0.5)], COCO),
    }


def run(transforms, results: dict) -> dict:
    for transform in transforms:
        results = transform(results)
    return results


@pytest.mark.parametrize('recipe', ['pad-crop-flip (CIFAR)', 'resized-crop-flip (ImageNet)'])
def test_the_same_seed_gives_the_pixels_of_the_transforms_they_stand_in_for(recipe):
    ours, theirs, images = pipelines()[recipe]
    for seed in range(5):
        for path in images:
            np.random.seed(seed)
            expected = run(theirs, load(path))['img']
            np.random.seed(seed)
            got = run(ours, load(path))['img']
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (recipe, seed, path.name)


@pytest.mark.parametrize('crop_args, flip_args', [
    (dict(crop_size=32, padding=(4, 2)), dict(prob=0.3, direction='vertical')),
    (dict(crop_size=(30, 36), padding=(1, 2, 3, 4)), dict(prob=[0.2, 0.5], direction=['horizontal', 'diagonal'])),
    (dict(crop_size=40), dict(prob=1.0)),  # larger than the image, no padding: the whole image
    (dict(crop_size=24, padding=4, pad_val=(10, 20, 30)), dict(prob=0.0)),
    (dict(crop_size=32, padding=4, pad_val=128), dict(prob=[0.5], direction=['horizontal'])),
])
def test_every_padding_fill_and_flip_setting_draws_and_paints_as_mmpretrain_and_mmcv(crop_args, flip_args):
    """The crop copies the window of the padded image without building it, the flip looks its one uniform draw up
    in a cumulative table instead of calling np.random.choice: same pixels, and the generator left in the same
    state (a later transform draws the same numbers)."""
    from mmcv.transforms import RandomFlip
    from mmpretrain.datasets.transforms import RandomCrop

    from kdplug.transforms.replay import ReplayRandomCrop, ReplayRandomFlip
    ours = [ReplayRandomCrop(**crop_args), ReplayRandomFlip(**flip_args)]
    theirs = [RandomCrop(**crop_args), RandomFlip(**flip_args)]
    for seed in range(8):
        for path in CIFAR[:3]:
            outputs = []
            for transforms in (theirs, ours):
                np.random.seed(seed)
                results = run(transforms, load(path))
                outputs.append((results['img'], tuple(results['img_shape'][:2]), results['flip'],
                                results['flip_direction'], np.random.random_sample()))
            (expected, *expected_rest), (got, *got_rest) = outputs
            assert got.dtype == expected.dtype and np.array_equal(got, expected), (crop_args, flip_args, seed)
            assert got_rest == expected_rest


@pytest.mark.parametrize('recipe', ['pad-crop-flip (CIFAR)', 'resized-crop-flip (ImageNet)'])
def test_a_replayed_view_equals_the_original_view_bit_for_bit(recipe):
    ours, _, images = pipelines()[recipe]
    np.random.seed(0)
    views = [run(ours, load(path)) for path in images for _ in range(4)]
    assert len({repr(v['view']) for v in views}) > len(images), 'the views should differ'
    np.random.seed(123)  # another generator state: a replay draws nothing
    state = np.random.get_state()[1].copy()
    for i, view in enumerate(views):
        replay = load(images[i // 4])
        replay['replay_view'] = copy.deepcopy(view['view'])
        replayed = run(ours, replay)
        assert np.array_equal(replayed['img'], view['img']) and replayed['view'] == view['view']
    assert np.array_equal(np.random.get_state()[1], state), 'a replay consumed random numbers'


def test_a_view_recorded_by_another_pipeline_is_refused_by_name():
    from kdplug.transforms.replay import ReplayRandomCrop
    results = load(CIFAR[0])
    results['replay_view'] = {'flip': (None,)}
    with pytest.raises(ValueError, match="no parameters for the transform 'crop'.*another pipeline"):
        ReplayRandomCrop(crop_size=32, padding=4)(results)


def test_the_transforms_are_registered_without_importing_mmpretrain(python):
    result = python('import sys\nfrom kdplug.registry import TRANSFORMS\n'
                    "print(TRANSFORMS.get('ReplayRandomCrop').__name__, 'mmpretrain' in sys.modules)")
    assert result.stdout.split() == ['ReplayRandomCrop', 'False'], result.stderr


def test_the_discrete_views_are_all_the_views_a_seeded_run_can_draw():
    """pad-4 crop x flip on 32x32 CIFAR: 9 x 9 offsets x 2 = 162 views; every drawn view is one of them."""
    from kdplug.transforms.replay import ReplayRandomCrop, ReplayRandomFlip, ReplayRandomResizedCrop
    crop, flip = ReplayRandomCrop(crop_size=32, padding=4), ReplayRandomFlip(prob=0.5)
    results = load(CIFAR[0])
    crops, flips = crop.choices(results), flip.choices(results)
    assert len(crops) * len(flips) == 162 and set(flips) == {('horizontal',), (None,)}
    np.random.seed(0)
    drawn = {(run([crop, flip], load(CIFAR[0]))['view']['crop'],) for _ in range(300)}
    assert {view for (view,) in drawn} <= set(crops) and len(drawn) > 60
    assert ReplayRandomCrop(crop_size=32, padding=(4, 2)).choices(results)[-1] == (4, 8)
    with pytest.raises(ValueError, match='continuous.*--mode epochs'):
        ReplayRandomResizedCrop(scale=32).choices(results)
