# KD (Hinton 2015) on the RoI classification logits: T = 1 (ImageNet-style), weight 1; the student's own
# detection losses keep their weights.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_12e_coco128.py']
model = dict(losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=1.0)))
