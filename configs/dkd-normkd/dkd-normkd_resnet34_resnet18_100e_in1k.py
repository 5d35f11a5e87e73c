# DKD + NormKD, ImageNet: t_norm = 1 with DKD's (alpha, beta) = (0.5, 0.5), warm-up 1 epoch.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', 'mmpretrain::_base_/datasets/imagenet_bs32.py',
          'mmpretrain::_base_/schedules/imagenet_bs256.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=0.5, beta=0.5, t_norm=1.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=1, losses=['dkd'])]
