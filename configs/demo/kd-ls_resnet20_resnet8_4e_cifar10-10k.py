# KD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427), CIFAR recipe: z-score, base temperature 2, w_ce
# = 0.1, w_kd = 9.
_base_ = ['../_base_/models/resnet20_resnet8_cifar10.py', '../_base_/datasets/cifar10_folder_10k.py',
          '../_base_/schedules/cifar_short.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    losses=dict(kd=dict(type='KDLoss', temperature=2.0, logit_norm='zscore', loss_weight=9.0)),
)
