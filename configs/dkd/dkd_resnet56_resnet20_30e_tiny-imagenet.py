# DKD: alpha = 1, beta = 2, T = 4, warm-up 3 epochs (20 of 240 in the full recipe: 2.5 of 30, rounded up);
# a short schedule for quick runs (30 epochs, cosine) on tiny-imagenet.
_base_ = ['../_base_/models/resnet56_resnet20_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_30e.py', '../_base_/distill_runtime.py']
model = dict(
    teacher=dict(checkpoint='work_dirs/resnet56_30e_tiny-imagenet/epoch_30.pth'),
    losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=2.0, temperature=4.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=3, losses=['dkd'])]
