# KD (Hinton 2015), CIFAR recipe: T = 4, w_ce = 0.1, w_kd = 0.9.
_base_ = ['../_base_/models/resnet20_resnet8_cifar10.py', '../_base_/datasets/cifar10_folder_10k.py',
          '../_base_/schedules/cifar_short.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)),
)
