# cifar100: teacher wrn40_2 -> student wrn16_2. Distillation configs add `losses` (and the student's
# cross-entropy weight). Train the teacher first: tools/train.py configs/teachers/wrn40_2_240e_cifar100.py
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    teacher=dict(
        type='CheckpointTeacher',
        model=dict(
            type='ImageClassifier',
            backbone=dict(type='kdplug.WRN40_2'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=100, in_channels=128, loss=dict(type='CrossEntropyLoss')),
        ),
        checkpoint='work_dirs/wrn40_2_240e_cifar100/epoch_240.pth',
    ),
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='kdplug.WRN16_2'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=128, loss=dict(type='CrossEntropyLoss')),
    ),
)
