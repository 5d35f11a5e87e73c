# DKD + NormKD (Chi et al., arXiv:2308.00520) on the RoI classification logits: DKD's alpha = 1, beta = 0.25 with
# NormKD's per-RoI temperatures, t_norm = 1.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_1x_coco.py']
model = dict(losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=0.25, t_norm=1.0)))
