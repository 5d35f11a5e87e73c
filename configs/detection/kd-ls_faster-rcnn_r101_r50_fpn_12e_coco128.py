# KD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427) on the RoI classification logits: z-score, base T
# = 2, weight 1 (CIFAR's w_kd = 9 went with w_ce = 0.1; here the student's detection losses keep weight 1: not
# measured).
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_12e_coco128.py']
model = dict(losses=dict(kd=dict(type='KDLoss', temperature=2.0, logit_norm='zscore', loss_weight=1.0)))
