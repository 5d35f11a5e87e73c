# DKD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): z-score, base T = 2, alpha = 9,
# beta = 72, warm-up 20 epochs: the authors' run of the pair (sunshangquan/logit-standardization-KD, logs/DKD/
# dkd,resnet32x4,resnet8x4,2,9.txt: base T 2, w_kd 9, DKD beta 8;
# their tools/train.py multiplies alpha and beta by w_kd).
_base_ = ['../_base_/models/resnet32x4_resnet8x4_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=9.0, beta=72.0, temperature=2.0, logit_norm='zscore')),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
