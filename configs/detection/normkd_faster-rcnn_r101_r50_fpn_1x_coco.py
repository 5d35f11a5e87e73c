# NormKD (Chi et al., arXiv:2308.00520) on the RoI classification logits: per-RoI temperature t_norm * std(logits),
# t_norm = 1 (the ImageNet value), weight 1.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_1x_coco.py']
model = dict(losses=dict(normkd=dict(type='NormKDLoss', t_norm=1.0, loss_weight=1.0)))
