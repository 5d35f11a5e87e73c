# KD: T = 4, w_ce = 0.1, w_kd = 0.9; a short schedule for quick runs (30 epochs, cosine) on cifar10.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_30e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    teacher=dict(checkpoint='work_dirs/resnet56_30e_cifar10/epoch_30.pth'),
    losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)),
)
