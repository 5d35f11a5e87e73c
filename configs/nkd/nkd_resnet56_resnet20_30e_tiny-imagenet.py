# NKD: T = 3, gamma = 3.5, w_ce = 1 (as the 240-epoch configs); a short schedule for quick runs (30 epochs,
# cosine) on tiny-imagenet.
_base_ = ['../_base_/models/resnet56_resnet20_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_30e.py', '../_base_/distill_runtime.py']
model = dict(
    teacher=dict(checkpoint='work_dirs/resnet56_30e_tiny-imagenet/epoch_30.pth'),
    losses=dict(nkd=dict(type='NKDLoss', temperature=3.0, gamma=3.5)),
)
