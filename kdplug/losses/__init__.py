"""The logit losses of kdplug: one method per file, torch only (no mmengine, no registry)."""
from .base import LogitLoss
from .dkd import DKDLoss
from .kd import KDLoss
from .multi_temp_kd import MultiTempKDLoss
from .nkd import NKDLoss
from .normkd import NormKDLoss
from .uskd import USKDLoss

__all__ = ['LogitLoss', 'KDLoss', 'DKDLoss', 'NKDLoss', 'NormKDLoss', 'MultiTempKDLoss', 'USKDLoss']
