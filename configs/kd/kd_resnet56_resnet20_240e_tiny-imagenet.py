# KD (Hinton 2015): T = 4, w_ce = 0.1, w_kd = 0.9.
_base_ = ['../_base_/models/resnet56_resnet20_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)),
)
