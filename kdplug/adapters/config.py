"""Model configs given inline or by reference to a config file (``cfg_path``), for every adapter."""
import copy

from mmengine.config import Config, ConfigDict


def model_config(cfg: dict) -> dict:
    """``cfg`` itself, or the ``model`` of ``cfg['cfg_path']`` (``'mmpretrain::resnet/resnet18_8xb32_in1k.py'``,
    ``'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'`` or a file path) with the other keys merged into it,
    e.g. ``dict(cfg_path=..., backbone=dict(init_cfg=None))``."""
    cfg = copy.deepcopy(dict(cfg))
    cfg_path = cfg.pop('cfg_path', None)
    if cfg_path is None:
        return cfg
    from mmengine.hub import get_config
    base = get_config(cfg_path) if '::' in cfg_path else Config.fromfile(cfg_path)
    merged = Config(dict(model=base.model))
    merged.merge_from_dict(dict(model=cfg))
    return merged.model.to_dict() if isinstance(merged.model, ConfigDict) else dict(merged.model)
