"""kdplug's own data transforms, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_transforms() -> List[type]:
    from kdplug.transforms.cached_load import CachedLoadImageFromFile
    from kdplug.transforms.checked_load import CheckedLoadImageFromFile
    from kdplug.transforms.replay import ReplayRandomCrop, ReplayRandomFlip, ReplayRandomResizedCrop
    return [CheckedLoadImageFromFile, CachedLoadImageFromFile, ReplayRandomCrop, ReplayRandomFlip,
            ReplayRandomResizedCrop]
