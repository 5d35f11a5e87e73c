# NKD: T = 3, gamma = 3.5, w_ce = 1 (as the 240-epoch configs); a short schedule for quick runs (30 epochs,
# cosine) on cifar10.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_30e.py', '../_base_/distill_runtime.py']
model = dict(
    teacher=dict(checkpoint='work_dirs/resnet56_30e_cifar10/epoch_30.pth'),
    losses=dict(nkd=dict(type='NKDLoss', temperature=3.0, gamma=3.5)),
)
