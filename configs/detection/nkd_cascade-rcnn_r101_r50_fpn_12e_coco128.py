# NKD: Yang, Zeng, Li, Zhang, Yuan and Li, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
# Approach with Normalized Loss and Customized Soft Labels", ICCV 2023, arXiv:2303.13005. The paper distils Faster
# R-CNN (supplement Table 5), not Cascade R-CNN: kdplug's choice is to distil the RoI classification logits of every
# cascade stage from the same stage of the teacher, on the RoIs the student sampled for it, each stage weighted as its
# own losses are (stage_loss_weights 1, 0.5, 0.25); logged distill.s<i>.loss_nkd. Hyper-parameters of the Faster
# R-CNN configs: T = 1, gamma = 1.5 (the ImageNet CNN values; the paper does not list its detection values); the
# target of background RoIs is the background class.
_base_ = ['./_base_/cascade-rcnn_r101_r50_fpn_12e_coco128.py']
model = dict(losses=dict(nkd=dict(type='NKDLoss', temperature=1.0, gamma=1.5)))
