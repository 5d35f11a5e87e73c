# NKD (Yang et al., ICCV 2023, arXiv:2303.13005, supplement Table 5) on the RoI classification logits: T = 1,
# gamma = 1.5 (the ImageNet CNN values; the paper does not list its detection values); the target of background RoIs
# is the background class.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_12e_coco128.py']
model = dict(losses=dict(nkd=dict(type='NKDLoss', temperature=1.0, gamma=1.5)))
