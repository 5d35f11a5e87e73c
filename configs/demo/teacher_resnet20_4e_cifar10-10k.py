# The demo's teacher: plain mmpretrain training of resnet20 on 10k CIFAR-10 images, 4 epochs.
_base_ = ['../_base_/datasets/cifar10_folder_10k.py', '../_base_/schedules/cifar_short.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ImageClassifier',
    backbone=dict(type='kdplug.ResNet20'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
)
