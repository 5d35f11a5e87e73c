# NormKD: Chi, Zheng, Li, Yang, Wu, Lin and Cai, "NormKD: Normalized Logits for Knowledge Distillation",
# arXiv:2308.00520 (2023). The paper reports no detection results: kdplug's choice is to distil the RoI classification
# logits of every cascade stage from the same stage of the teacher, on the RoIs the student sampled for it, each stage
# weighted as its own losses are (stage_loss_weights 1, 0.5, 0.25); logged distill.s<i>.loss_normkd.
# Hyper-parameters of the Faster R-CNN configs: per-RoI temperature t_norm * std(logits), t_norm = 1 (the ImageNet
# value), weight 1.
_base_ = ['./_base_/cascade-rcnn_r101_r50_fpn_1x_coco.py']
model = dict(losses=dict(normkd=dict(type='NormKDLoss', t_norm=1.0, loss_weight=1.0)))
