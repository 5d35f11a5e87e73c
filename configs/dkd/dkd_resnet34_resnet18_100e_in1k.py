# DKD, ImageNet recipe (ResNet-34 -> ResNet-18): alpha = 0.5, beta = 0.5, T = 1, w_ce = 1, warm-up 1 epoch.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', 'mmpretrain::_base_/datasets/imagenet_bs32.py',
          'mmpretrain::_base_/schedules/imagenet_bs256.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=0.5, beta=0.5, temperature=1.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=1, losses=['dkd'])]
