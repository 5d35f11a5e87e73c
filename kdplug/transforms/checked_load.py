"""``LoadImageFromFile`` whose errors name the image and the fix.

    train_pipeline = [dict(type='kdplug.CheckedLoadImageFromFile'), dict(type='LoadAnnotations', ...), ...]

mmcv's loader passes OpenCV's words through: an empty file ends in ``(-215:Assertion failed) !buf.empty()``
without the file's name, a damaged one in an AssertionError ``failed to load image: PATH`` that says nothing of
what to do, and inside a dataloader worker there is no index either. This transform takes the same options,
returns the same results, and raises a ValueError that names the file and the fix (a missing file keeps mmcv's
FileNotFoundError, which names it). kdplug's
classification configs get it through :class:`~kdplug.transforms.cached_load.CachedLoadImageFromFile`, its detection
configs directly; any OpenMMLab pipeline can name it in place of ``LoadImageFromFile``.
"""
from typing import Any, Iterator, List, Optional

from mmcv.transforms import LoadImageFromFile


class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same options, same results); an image that cannot be read or decoded raises an
    error naming its file. ``ignore_empty=True`` still returns None for a missing file, as mmcv's loader does."""

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        try:
            return super().transform(results)
        except Exception as err:
            if path is None or isinstance(err, FileNotFoundError):  # mmcv's own message names a missing file
                raise
            raise ValueError(f'the image {path} cannot be decoded ({type(err).__name__}: {str(err).strip()}): it is '
                             'empty, damaged or not an image. Replace it, or take it out of the dataset (its folder, '
                             'or its entry in the annotation file)') from err


#: The dataloaders whose pipelines :func:`dataloader_pipelines` gives.
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def dataloader_pipelines(cfg: Any) -> Iterator[List[Any]]:
    """Each pipeline (a list of transform configs, to be changed in place) of ``cfg``'s dataloaders, the pipelines
    of datasets wrapped in others (``dataset``, ``datasets``) included."""
    def pipelines(dataset: Any) -> Iterator[List[Any]]:
        if not isinstance(dataset, dict):
            return
        if dataset.get('pipeline'):
            yield dataset['pipeline']
        yield from pipelines(dataset.get('dataset'))
        for inner in dataset.get('datasets') or []:
            yield from pipelines(inner)

    for name in DATALOADERS:
        yield from pipelines((cfg.get(name) or {}).get('dataset'))
