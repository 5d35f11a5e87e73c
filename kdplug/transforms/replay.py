"""Random transforms whose views can be replayed: each records the parameters it drew, and applies given ones.

The teacher-cache of kdplug stores a teacher's logits per (image, view); a student run must then see exactly the view
that was scored. These transforms draw their parameters with the same calls to numpy's global generator as the
transforms they stand in for, so a pipeline with the same seed gives the same pixels:

* :class:`ReplayRandomCrop`: mmpretrain's ``RandomCrop`` (constant padding, then a crop at a random offset);
* :class:`ReplayRandomFlip`: mmcv's ``RandomFlip``;
* :class:`ReplayRandomResizedCrop`: mmpretrain's ``RandomResizedCrop`` (Inception-style area and aspect ratio,
  10 attempts, then a centre crop).

Each writes what it drew into ``results['view'][name]`` (``name``: ``'crop'``, ``'flip'``, ``'resized_crop'``, or
the ``name=`` given) and, when ``results['replay_view']`` holds an entry for its name, applies that instead of
drawing (and draws nothing: the generator is left untouched). They import mmcv only (not mmpretrain), so loading
kdplug's plugins stays cheap.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, RandomFlip

VIEW = 'view'
REPLAY = 'replay_view'


def _pair(size: Union[int, Sequence[int]], what: str) -> Tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f'{what} must be a positive int or (h, w), got {size!r}')
    return int(size[0]), int(size[1])


def replayed(results: dict, name: str) -> Optional[tuple]:
    """The parameters to apply for ``name``, or None to draw them."""
    replay = results.get(REPLAY)
    if replay is None:
        return None
    if name not in replay:
        raise ValueError(f'results["{REPLAY}"] holds no parameters for the transform {name!r} (it has '
                       f'{sorted(replay)}): the view was recorded with another pipeline')
    return replay[name]


def record(results: dict, name: str, params) -> None:
    results.setdefault(VIEW, {})[name] = params


def crop(img: np.ndarray, offset_h: int, offset_w: int, target_h: int, target_w: int) -> np.ndarray:
    return mmcv.imcrop(img, np.array([offset_w, offset_h, offset_w + target_w - 1, offset_h + target_h - 1]))


def padding_sides(padding: Optional[Union[int, Sequence[int]]]) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) under ``mmcv.impad``'s conventions: all sides, (left/right, top/bottom) or
    (left, top, right, bottom)."""
    pad = padding or 0
    if isinstance(pad, int):
        return (pad,) * 4
    return (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else tuple(pad)


def crop_of_zero_padded(img: np.ndarray, sides: Tuple[int, int, int, int], offset_h: int, offset_w: int,
                        target_h: int, target_w: int) -> np.ndarray:
    """``crop(impad(img, sides, pad_val=0), ...)`` without building the padded image: the pixels that fall inside
    the image are copied, the rest stay zero. One small copy instead of a padded copy and a crop (the padded copy
    and mmcv's crop were the largest per-sample cost of the CIFAR pipeline)."""
    left, top = sides[0], sides[1]
    out = np.zeros((target_h, target_w) + img.shape[2:], img.dtype)
    y0, x0 = offset_h - top, offset_w - left  # the crop's corner in the unpadded image's coordinates
    ys, ye = max(y0, 0), min(y0 + target_h, img.shape[0])
    xs, xe = max(x0, 0), min(x0 + target_w, img.shape[1])
    if ys < ye and xs < xe:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = img[ys:ye, xs:xe]
    return out


class ReplayRandomCrop(BaseTransform):
    """mmpretrain's ``RandomCrop(crop_size, padding, pad_val)`` (constant padding) with a replayable offset,
    recorded as ``(offset_h, offset_w)``."""

    def __init__(self, crop_size: Union[int, Sequence[int]], padding: Optional[Union[int, Sequence[int]]] = None,
                 pad_val: Union[int, Sequence[int]] = 0, name: str = 'crop') -> None:
        self.crop_size = _pair(crop_size, 'crop_size')
        self.padding, self.pad_val, self.name = padding, pad_val, name

    def choices(self, results: dict) -> List[tuple]:
        """Every offset this crop can draw on ``results['img']`` (after its padding), as recorded."""
        h, w = results['img'].shape[:2]
        left, top, right, bottom = padding_sides(self.padding)
        h, w = h + top + bottom, w + left + right
        if (h, w) == self.crop_size:
            return [(0, 0)]
        rows, cols = h - min(h, self.crop_size[0]) + 1, w - min(w, self.crop_size[1]) + 1
        return [(oh, ow) for oh in range(rows) for ow in range(cols)]

    def transform(self, results: dict) -> dict:
        img = results['img']
        sides = padding_sides(self.padding)
        h, w = img.shape[0] + sides[1] + sides[3], img.shape[1] + sides[0] + sides[2]
        target_h, target_w = min(h, self.crop_size[0]), min(w, self.crop_size[1])
        params = replayed(results, self.name)
        if params is None:
            if (h, w) == self.crop_size:
                params = (0, 0)
            else:  # the order of mmpretrain's draws: offset_h, then offset_w
                params = (int(np.random.randint(0, h - target_h + 1)), int(np.random.randint(0, w - target_w + 1)))
        offset_h, offset_w = params
        if self.pad_val == 0 and min(sides) >= 0:
            results['img'] = crop_of_zero_padded(img, sides, offset_h, offset_w, target_h, target_w)
        else:  # another fill value: cv2's own conventions for it (a scalar fills the first channel only)
            if self.padding is not None:
                img = mmcv.impad(img, padding=self.padding, pad_val=self.pad_val)
            results['img'] = crop(img, offset_h, offset_w, target_h, target_w)
        results['img_shape'] = results['img'].shape[:2]
        record(results, self.name, (int(offset_h), int(offset_w)))
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(crop_size={self.crop_size}, padding={self.padding}, pad_val={self.pad_val})'


class ReplayRandomFlip(RandomFlip):
    """mmcv's ``RandomFlip`` with a replayable decision, recorded as the direction (None: not flipped)."""

    def __init__(self, *args, name: str = 'flip', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.name = name
        directions = [self.direction] if isinstance(self.direction, str) else list(self.direction)
        probs = self.prob + [1 - sum(self.prob)] if isinstance(self.prob, list) else \
            [self.prob / len(directions)] * len(directions) + [1. - self.prob]
        self._outcomes = directions + [None]
        # np.random.choice(outcomes, p=probs) draws one random_sample() and looks it up in this normalised cdf:
        # the same draw and lookup without choice's per-call validation (the costliest call of the flip)
        self._cdf = np.asarray(probs, dtype=np.float64).cumsum()
        self._cdf /= self._cdf[-1]

    def draw_direction(self) -> Optional[str]:
        """``RandomFlip._choose_direction()``: the same generator call, the same outcome."""
        return self._outcomes[int(self._cdf.searchsorted(np.random.random_sample(), side='right'))]

    def transform(self, results: dict) -> dict:
        params = replayed(results, self.name)
        direction = self.draw_direction() if params is None else params[0]
        if direction is None:
            results['flip'] = False
            results['flip_direction'] = None
        else:
            results['flip'] = True
            results['flip_direction'] = direction
            self._flip(results)
        record(results, self.name, (None if direction is None else str(direction),))
        return results

    def choices(self, results: dict) -> List[tuple]:
        """Every decision this flip can draw (directions of non-zero probability, and not flipping)."""
        directions = [self.direction] if isinstance(self.direction, str) else list(self.direction)
        probs = self.prob if isinstance(self.prob, list) else [self.prob / len(directions)] * len(directions)
        out = [(d,) for d, p in zip(directions, probs) if p > 0]
        return out + [(None,)] if sum(probs) < 1 else out


class ReplayRandomResizedCrop(BaseTransform):
    """mmpretrain's ``RandomResizedCrop`` with replayable crop box, recorded as
    ``(offset_h, offset_w, target_h, target_w)``."""

    def __init__(self, scale: Union[int, Sequence[int]], crop_ratio_range: Tuple[float, float] = (0.08, 1.0),
                 aspect_ratio_range: Tuple[float, float] = (3. / 4., 4. / 3.), max_attempts: int = 10,
                 interpolation: str = 'bilinear', backend: str = 'cv2', name: str = 'resized_crop') -> None:
        self.scale = _pair(scale, 'scale')
        if crop_ratio_range[0] > crop_ratio_range[1] or aspect_ratio_range[0] > aspect_ratio_range[1]:
            raise ValueError(f'range (min, max) expected: crop_ratio_range {crop_ratio_range}, aspect_ratio_range '
                             f'{aspect_ratio_range}')
        self.crop_ratio_range, self.aspect_ratio_range = crop_ratio_range, aspect_ratio_range
        self.max_attempts, self.interpolation, self.backend, self.name = max_attempts, interpolation, backend, name

    def draw(self, h: int, w: int) -> Tuple[int, int, int, int]:
        """mmpretrain's draws, in its order: area, log aspect ratio, then the offsets of a box that fits."""
        area = h * w
        log_ratio = (math.log(self.aspect_ratio_range[0]), math.log(self.aspect_ratio_range[1]))
        for _ in range(self.max_attempts):
            target_area = np.random.uniform(*self.crop_ratio_range) * area
            aspect_ratio = math.exp(np.random.uniform(*log_ratio))
            target_w = int(round(math.sqrt(target_area * aspect_ratio)))
            target_h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < target_w <= w and 0 < target_h <= h:
                offset_h = np.random.randint(0, h - target_h + 1)
                return offset_h, np.random.randint(0, w - target_w + 1), target_h, target_w
        in_ratio = float(w) / float(h)  # no box fitted: a centre crop, as mmpretrain falls back
        if in_ratio < min(self.aspect_ratio_range):
            target_w, target_h = w, int(round(w / min(self.aspect_ratio_range)))
        elif in_ratio > max(self.aspect_ratio_range):
            target_h, target_w = h, int(round(h * max(self.aspect_ratio_range)))
        else:
            target_h, target_w = h, w
        return (h - target_h) // 2, (w - target_w) // 2, target_h, target_w

    def choices(self, results: dict) -> List[tuple]:
        raise ValueError(f'{type(self).__name__} draws from a continuous range: its views cannot all be listed; cache '
                         'the views a seeded run draws instead (tools/cache_teacher.py --mode epochs)')

    def transform(self, results: dict) -> dict:
        img = results['img']
        params = replayed(results, self.name)
        if params is None:
            params = self.draw(*img.shape[:2])
        params = tuple(int(p) for p in params)
        img = crop(img, *params)
        results['img'] = mmcv.imresize(img, tuple(self.scale[::-1]), interpolation=self.interpolation,
                                       backend=self.backend)
        results['img_shape'] = results['img'].shape[:2]
        record(results, self.name, params)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, crop_ratio_range={self.crop_ratio_range}, '
                f'aspect_ratio_range={self.aspect_ratio_range}, interpolation={self.interpolation})')


#: The replayable stand-in of each transform type of the configs (``type`` in a pipeline).
REPLAYABLE: Dict[str, type] = {'RandomCrop': ReplayRandomCrop, 'RandomFlip': ReplayRandomFlip,
                               'RandomResizedCrop': ReplayRandomResizedCrop}
