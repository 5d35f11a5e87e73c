# DKD (Zhao 2022) on the RoI classification logits: alpha = 1, beta = 0.25, T = 1, no warm-up (the DKD
# authors' detection recipe, mdistiller/detection); the target of background RoIs is the background class.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_12e_coco128.py']
model = dict(losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=0.25, temperature=1.0)))
