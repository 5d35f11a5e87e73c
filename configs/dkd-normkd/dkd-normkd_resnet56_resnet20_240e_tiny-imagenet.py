# DKD + NormKD (003): t_norm = 2; the paper gives no (alpha, beta) for this pair: DKD's (1, 2.0).
_base_ = ['../_base_/models/resnet56_resnet20_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=2.0, t_norm=2.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
