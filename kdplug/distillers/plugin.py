"""kdplug's own distillers, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_distillers() -> List[type]:
    from kdplug.distillers.ema_distiller import EMADistiller
    from kdplug.distillers.feature_distiller import FeatureDistiller
    from kdplug.distillers.logit_distiller import LogitDistiller
    from kdplug.distillers.roi_distiller import RoIHeadDistiller
    from kdplug.distillers.uskd_distiller import USKDDistiller
    return [LogitDistiller, USKDDistiller, EMADistiller, RoIHeadDistiller, FeatureDistiller]
