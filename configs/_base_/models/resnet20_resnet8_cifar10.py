# CIFAR-10 pair for quick runs: teacher resnet20 (0.27M parameters) -> student resnet8 (0.08M).
# Distillation configs add `losses` (and the student's cross-entropy weight) to this model.
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    teacher=dict(
        type='CheckpointTeacher',
        model=dict(
            type='ImageClassifier',
            backbone=dict(type='kdplug.ResNet20'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
        ),
        checkpoint='work_dirs/teacher_resnet20_4e_cifar10-10k/epoch_4.pth',
    ),
    student=dict(
        type='ImageClassifier',
        backbone=dict(type='kdplug.ResNet8'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')),
    ),
)
