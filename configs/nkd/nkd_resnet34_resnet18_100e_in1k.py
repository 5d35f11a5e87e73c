# NKD, ImageNet: T = 1, gamma = 1.5, added to the student's full cross-entropy (w_ce = 1), with mmpretrain's
# ResNet-34 teacher and schedule: the authors' yzd-v/cls_KD configs/distillers/imagenet/res34_distill_res18_img.py.
_base_ = ['../_base_/models/resnet34_resnet18_in1k.py', '../_base_/datasets/imagenet_bs32_replay.py',
          'mmpretrain::_base_/schedules/imagenet_bs256.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(nkd=dict(type='NKDLoss', temperature=1.0, gamma=1.5)),
)
