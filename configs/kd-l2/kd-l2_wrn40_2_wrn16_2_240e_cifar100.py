# KD on L2-normalised logits (appendix of Kong et al., CVPR 2022): tau = 1. Unit-norm logits make the loss small:
# w_kd = 10 is kdplug's choice (not a paper value), w_ce = 1.
_base_ = ['../_base_/models/wrn40_2_wrn16_2_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(kd=dict(type='KDLoss', temperature=1.0, logit_norm='l2', loss_weight=10.0)),
)
