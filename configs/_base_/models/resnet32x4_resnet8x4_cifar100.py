# cifar100: teacher resnet32x4 -> student resnet8x4. Distillation configs add `losses` (and the student's
# cross-entropy weight). Train the teacher first: tools/train.py configs/teachers/resnet32x4_240e_cifar100.py
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    teacher=dict(
        type='CheckpointTeacher',
        model=dict(
            type='ImageClassifier',
            backbone=dict(type='kdplug.ResNet32x4'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=100, in_channels=256, loss=dict(type='CrossEntropyLoss')),
        ),
        checkpoint='work_dirs/resnet32x4_240e_cifar100/epoch_240.pth',
    ),
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='kdplug.ResNet8x4'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=100, in_channels=256, loss=dict(type='CrossEntropyLoss')),
    ),
)
