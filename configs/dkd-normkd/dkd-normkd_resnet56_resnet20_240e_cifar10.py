# DKD + NormKD: alpha = 7, beta = 2, t_norm = 2, w_ce = 1, warm-up 20 epochs: the authors' CIFAR-100 values
# (gizi1/NormKD configs/cifar100/NormKD_DKD/res56_res20.yaml; t_norm, w_ce and the warm-up are its defaults).
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=7.0, beta=2.0, t_norm=2.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
