# NormKD (Chi et al., arXiv:2308.00520), CIFAR recipe: t_norm = 2.0, w_ce = 0.1, w_kd = 0.9.
_base_ = ['../_base_/models/resnet20_resnet8_cifar10.py', '../_base_/datasets/cifar10_folder_10k.py',
          '../_base_/schedules/cifar_short.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    losses=dict(normkd=dict(type='NormKDLoss', t_norm=2.0, loss_weight=0.9)),
)
