# NormKD, ImageNet recipe: t_norm = 1, w_ce = 0.5, w_kd = 0.5.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', 'mmpretrain::_base_/datasets/imagenet_bs32.py',
          'mmpretrain::_base_/schedules/imagenet_bs256.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.5))),  # w_ce
    losses=dict(normkd=dict(type='NormKDLoss', t_norm=1.0, loss_weight=0.5)),
)
