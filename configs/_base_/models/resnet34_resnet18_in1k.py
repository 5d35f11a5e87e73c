# ImageNet: teacher ResNet-34 (mmpretrain model zoo, 73.62 top-1) -> student ResNet-18, mmpretrain's own configs.
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    teacher=dict(type='CheckpointTeacher', model=dict(cfg_path='mmpretrain::resnet/resnet34_8xb32_in1k.py'),
                 checkpoint='https://download.openmmlab.com/mmclassification/v0/resnet/'
                            'resnet34_8xb32_in1k_20210831-f257d4e6.pth'),
    student=dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py'),
)
