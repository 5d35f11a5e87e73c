# wrn16_2 on cifar100, plain mmpretrain training with the CIFAR recipe (the student alone).
_base_ = ['../_base_/datasets/cifar100.py', '../_base_/schedules/cifar_240e.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ImageClassifier',
    backbone=dict(type='kdplug.WRN16_2'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=100, in_channels=128, loss=dict(type='CrossEntropyLoss')),
)
