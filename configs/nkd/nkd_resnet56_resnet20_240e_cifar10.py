# NKD: T = 3, gamma = 3.5, added to the student's full cross-entropy (w_ce = 1): the authors' CIFAR-100 values
# (yzd-v/cls_KD configs/distillers/cifar100/res34_distill_res18_cifar.py), on the DKD recipe the paper follows.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(nkd=dict(type='NKDLoss', temperature=3.0, gamma=3.5)),
)
