# DKD + NormKD: alpha = 3, beta = 6, t_norm = 2, w_ce = 1, warm-up 20 epochs: the authors' values
# (gizi1/NormKD configs/cifar100/NormKD_DKD/wrn40_2_wrn_40_1.yaml; t_norm, w_ce and the warm-up are its defaults).
_base_ = ['../_base_/models/wrn40_2_wrn40_1_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=3.0, beta=6.0, t_norm=2.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
