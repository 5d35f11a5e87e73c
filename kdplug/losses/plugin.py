"""kdplug's own losses, contributed through the plugin hooks like any third-party plugin's."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_losses() -> List[type]:
    from kdplug.losses import DKDLoss, KDLoss, MultiTempKDLoss, NKDLoss, NormKDLoss, USKDLoss
    from kdplug.losses.ctkd import CTKDLoss
    from kdplug.losses.mlkd import CorrectedMLKDLoss, MLKDLoss
    return [KDLoss, DKDLoss, NKDLoss, NormKDLoss, MultiTempKDLoss, USKDLoss, CTKDLoss, MLKDLoss, CorrectedMLKDLoss]
