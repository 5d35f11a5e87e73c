# DKD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): z-score, base T = 2, alpha = 12,
# beta = 24, warm-up 20 epochs: the authors' run of the pair (sunshangquan/logit-standardization-KD, logs/DKD/
# dkd,wrn_40_2,wrn_16_2,2,12,2.0.txt: base T 2, w_kd 12, DKD beta 2;
# their tools/train.py multiplies alpha and beta by w_kd).
_base_ = ['../_base_/models/wrn40_2_wrn16_2_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=12.0, beta=24.0, temperature=2.0, logit_norm='zscore')),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
