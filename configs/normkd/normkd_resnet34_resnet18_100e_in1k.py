# NormKD, ImageNet: t_norm = 1, w_ce = 0.5, w_kd = 0.5 (paper section 4.3 and the authors'
# configs/imagenet/r34_r18/normkd.yaml in gizi1/NormKD); their ImageNet recipe, batch 512 = 4 GPUs x 128.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          '../_base_/schedules/imagenet_100e_bs512.py', '../_base_/distill_runtime.py']
train_dataloader = dict(batch_size=128)  # per GPU
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.5))),  # w_ce
    losses=dict(normkd=dict(type='NormKDLoss', t_norm=1.0, loss_weight=0.5)),
)
