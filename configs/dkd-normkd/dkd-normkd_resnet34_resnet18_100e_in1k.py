# DKD + NormKD, ImageNet: alpha = 1, beta = 1, t_norm = 0.5, w_ce = 1, warm-up 1 epoch (the authors'
# configs/imagenet/r34_r18/dkd_normkd.yaml in gizi1/NormKD); their ImageNet recipe, batch 512 = 4 GPUs x 128.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          '../_base_/schedules/imagenet_100e_bs512.py', '../_base_/distill_runtime.py']
train_dataloader = dict(batch_size=128)  # per GPU
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=1.0))),  # w_ce
    losses=dict(dkd=dict(type='DKDLoss', alpha=1.0, beta=1.0, t_norm=0.5)),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=1, losses=['dkd'])]
