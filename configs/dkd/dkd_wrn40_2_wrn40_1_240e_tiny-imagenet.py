# DKD (Zhao 2022): alpha = 1, beta = 6.0, T = 4, w_ce = 1, warm-up 20 epochs.
_base_ = ['../_base_/models/wrn40_2_wrn40_1_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=6.0, temperature=4.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
