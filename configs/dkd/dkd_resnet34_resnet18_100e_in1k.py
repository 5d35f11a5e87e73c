# DKD, ImageNet recipe (ResNet-34 -> ResNet-18) of the authors' configs/imagenet/r34_r18/dkd.yaml in
# megvii-research/mdistiller: alpha = 1 (their default, the file sets only BETA), beta = 0.5, T = 1, w_ce = 1,
# warm-up 1 epoch; batch 512 (4 GPUs x 128), lr 0.2 divided by 10 at epochs 30 / 60 / 90, weight decay 1e-4,
# 100 epochs, SGD with momentum 0.9 (their trainer's plain SGD: no Nesterov).
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          '../_base_/schedules/imagenet_100e_bs512.py', '../_base_/distill_runtime.py']
train_dataloader = dict(batch_size=128)  # per GPU
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=0.5, temperature=1.0)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=1, losses=['dkd'])]
