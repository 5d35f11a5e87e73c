# KD: T = 4, w_ce = 0.1, w_kd = 0.9; a short schedule for quick runs (30 epochs, cosine) on cifar10.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_short.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    teacher_ckpt='work_dirs/resnet56_30e_cifar10/epoch_30.pth',
    losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)),
)
max_epochs = 30
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
