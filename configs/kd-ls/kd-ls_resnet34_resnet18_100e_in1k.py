# KD + logit standardization, ImageNet: the authors' command (sunshangquan/logit-standardization-KD README:
# configs/imagenet/r34_r18/kd.yaml --logit-stand --base-temp 2 --kd-weight 9): z-score, base T = 2, w_kd = 9,
# w_ce = 1 (that file's CE_WEIGHT); batch 512 (4 GPUs x 128), lr 0.2 divided by 10 at epochs 30 / 60 / 90, weight
# decay 1e-4, 100 epochs, SGD with momentum 0.9.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          '../_base_/schedules/imagenet_100e_bs512.py', '../_base_/distill_runtime.py']
train_dataloader = dict(batch_size=128)  # per GPU
model = dict(
    losses=dict(kd=dict(type='KDLoss', temperature=2.0, logit_norm='zscore', loss_weight=9.0)),
)
