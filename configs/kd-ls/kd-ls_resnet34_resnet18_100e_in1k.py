# KD + logit standardization: z-score, base T = 2, w_ce = 0.1, w_kd = 9 (the CIFAR weights; the poster
# gives no ImageNet weights).
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          'mmpretrain::_base_/schedules/imagenet_bs256.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(kd=dict(type='KDLoss', temperature=2.0, logit_norm='zscore', loss_weight=9.0)),
)
