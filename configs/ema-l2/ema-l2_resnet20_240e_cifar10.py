# Self-distillation from an EMA teacher with L2-normalised logits (appendix of Kong et al., CVPR 2022) on CIFAR-10 image
# folders: tau = 1, xi = 0.99, w_kd = 10 (kdplug's choice), w_ce = 1.
_base_ = ['../_base_/datasets/cifar10_folder.py', '../_base_/schedules/cifar_240e.py', '../_base_/default_runtime.py']
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='kdplug.ResNet20'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
    ),
    teacher=dict(type='EMATeacher', xi=0.99),
    losses=dict(kd=dict(type='KDLoss', temperature=1.0, logit_norm='l2', loss_weight=10.0)),
)
custom_hooks = [dict(type='kdplug.EMATeacherHook')]
