# Multi-temperature KD (Chi et al., "NormKD", arXiv:2308.00520, section 3.2): temperatures 1..14 (best set of Table 1),
# w_ce = 0.1, w_kd = 0.9.
_base_ = ['../_base_/models/wrn40_2_wrn40_1_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(mtkd=dict(type='MultiTempKDLoss', temperatures=list(range(1, 15)), loss_weight=0.9)),
)
