# The demo's baseline: the student alone (plain mmpretrain), same data and schedule as the distilled students.
_base_ = ['../_base_/datasets/cifar10_folder_10k.py', '../_base_/schedules/cifar_short.py',
          '../_base_/default_runtime.py']
model = dict(
    type='ImageClassifier',
    backbone=dict(type='kdplug.ResNet8'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
)
