# Self-distillation from an EMA teacher with L2-normalised logits (appendix of Kong et al., CVPR 2022): tau = 1,
# xi = 0.99 (its Table 3 spans 0.9..0.99). Unit-norm logits make the KL small: w_kd = 10 is kdplug's choice (not a
# paper value), w_ce = 1.
_base_ = ['../_base_/datasets/cifar100.py', '../_base_/schedules/cifar_240e.py', '../_base_/default_runtime.py']
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='kdplug.ResNet8x4'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=256, loss=dict(type='CrossEntropyLoss')),
    ),
    teacher=dict(type='EMATeacher', xi=0.99),
    losses=dict(kd=dict(type='KDLoss', temperature=1.0, logit_norm='l2', loss_weight=10.0)),
)
custom_hooks = [dict(type='kdplug.EMATeacherHook')]
