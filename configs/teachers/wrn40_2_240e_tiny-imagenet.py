# wrn40_2 on tiny-imagenet, plain mmpretrain training with the CIFAR recipe (the teacher alone).
_base_ = ['../_base_/datasets/tiny_imagenet_folder.py', '../_base_/schedules/cifar_240e.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ImageClassifier',
    backbone=dict(type='kdplug.WRN40_2'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=200, in_channels=128, loss=dict(type='CrossEntropyLoss')),
)
