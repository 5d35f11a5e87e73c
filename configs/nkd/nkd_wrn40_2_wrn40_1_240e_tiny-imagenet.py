# NKD (001): CIFAR T = 3, gamma = 3.5, added to the full cross-entropy (w_ce = 1).
_base_ = ['../_base_/models/wrn40_2_wrn40_1_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(nkd=dict(type='NKDLoss', temperature=3.0, gamma=3.5)),
)
