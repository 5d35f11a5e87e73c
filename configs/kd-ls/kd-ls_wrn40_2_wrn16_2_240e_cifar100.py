# KD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): z-score, base T = 2, w_ce = 0.1, w_kd = 9.
_base_ = ['../_base_/models/wrn40_2_wrn16_2_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(kd=dict(type='KDLoss', temperature=2.0, logit_norm='zscore', loss_weight=9.0)),
)
