"""``LoadImageFromFile`` that decodes each image once per process and serves later epochs from memory.

    train_pipeline = [dict(type='kdplug.CachedLoadImageFromFile'), dict(type='RandomCrop', ...), ...]

CIFAR and Tiny-ImageNet stored as image files cost a file read and a JPEG decode per sample and epoch; on a small
CPU that competes with the model for the same cores (mmpretrain's own CIFAR datasets hold decoded arrays instead).
This transform takes mmcv's ``LoadImageFromFile`` options, loads an image the first time a process sees its path,
keeps the decoded pixels, and afterwards returns a copy of them with the same ``img_shape`` / ``ori_shape``: what
follows in the pipeline, and so the model, sees exactly the same arrays. Memory: the decoded pixels of the images
each process loads (CIFAR-10: 3 KB an image, 150 MB for all 50k; each dataloader worker holds its own cache).
"""
from typing import Dict, Optional

import numpy as np

from .checked_load import CheckedLoadImageFromFile


class CachedLoadImageFromFile(CheckedLoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` with a per-process cache of the decoded images, keyed by path; an image that
    cannot be decoded raises an error naming its file (:class:`.CheckedLoadImageFromFile`).

    Args:
        max_images: stop adding to the cache beyond this many images (None: no limit); later images are read
            from their files as usual.
        **kwargs: the options of ``LoadImageFromFile`` (``to_float32``, ``color_type``, ``imdecode_backend``...).
    """

    def __init__(self, max_images: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_images = max_images
        self._cache: Dict[str, np.ndarray] = {}

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        if path is None and 'img' in results:
            # an image given as an array (mmpretrain's ImageClassificationInferencer loads it itself and drops only
            # transforms named LoadImageFromFile from the pipeline): already loaded, nothing to read or cache
            return results
        if path is None:
            raise KeyError('CachedLoadImageFromFile needs results["img_path"] (a dataset\'s sample) or an already '
                           'loaded results["img"]')
        img = self._cache.get(path)
        if img is None:
            results = super().transform(results)
            if results is None:  # ignore_empty and a missing file: nothing to cache
                return None
            if self.max_images is None or len(self._cache) < self.max_images:
                self._cache[path] = results['img']
                results['img'] = results['img'].copy()  # the next transforms may write into it
            return results
        img = img.copy()
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results
