"""kdplug's own distillers, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_distillers() -> List[type]:
    from kdplug.distillers.distiller import Distiller
    return [Distiller]
