# KD, ImageNet recipe: T = 1, w_ce = 0.5, w_kd = 0.5.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          'mmpretrain::_base_/schedules/imagenet_bs256.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.5))),  # w_ce
    losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=0.5)),
)
