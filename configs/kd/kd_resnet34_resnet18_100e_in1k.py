# KD, ImageNet recipe of the authors' configs/imagenet/r34_r18/kd.yaml in megvii-research/mdistiller (the run behind
# the NormKD paper's 70.66): T = 1, w_ce = 0.5, w_kd = 0.5; batch 512 (4 GPUs x 128), lr 0.2 divided by 10 at epochs
# 30 / 60 / 90, weight decay 1e-4, 100 epochs, SGD with momentum 0.9.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          '../_base_/schedules/imagenet_100e_bs512.py', '../_base_/distill_runtime.py']
train_dataloader = dict(batch_size=128)  # per GPU
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.5))),  # w_ce
    losses=dict(kd=dict(type='KDLoss', temperature=1.0, loss_weight=0.5)),
)
