"""kdplug's own data transforms, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_transforms() -> List[type]:
    from kdplug.transforms.cached_load import CachedLoadImageFromFile
    return [CachedLoadImageFromFile]
