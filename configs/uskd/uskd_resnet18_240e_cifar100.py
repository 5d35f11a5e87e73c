# USKD (Yang et al., ICCV 2023, arXiv:2303.13005), CIFAR-100 recipe: alpha = 0.1, beta = 0.1, mu = 0.1, added to
# the student's cross-entropy; the weak head on layer3 (the third of four stages) of mmpretrain's CIFAR ResNet-18.
# No teacher.
_base_ = ['../_base_/datasets/cifar100.py', '../_base_/schedules/cifar_240e.py', '../_base_/default_runtime.py']
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18, num_stages=4, out_indices=(3, ), style='pytorch'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=512, loss=dict(type='CrossEntropyLoss')),
    ),
    teacher=dict(type='WeakHeadTeacher', position='layer3'),  # the weak head on the third of four stages
    losses=dict(uskd=dict(type='USKDLoss', alpha=0.1, beta=0.1, mu=0.1)),
)
