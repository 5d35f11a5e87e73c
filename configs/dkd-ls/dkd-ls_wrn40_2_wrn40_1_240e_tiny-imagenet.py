# DKD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): z-score, base T = 2, alpha and beta x9 (9.0,
# 54.0), warm-up 20 epochs.
_base_ = ['../_base_/models/wrn40_2_wrn40_1_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=9.0, beta=54.0, temperature=2.0, logit_norm='zscore')),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
