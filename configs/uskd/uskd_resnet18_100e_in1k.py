# USKD (Yang et al., ICCV 2023, arXiv:2303.13005), ImageNet recipe: alpha = 1, beta = 0.1, mu = 0.005, added to
# the student's cross-entropy; mmpretrain's ResNet-18 and its standard pipeline, weak head on layer3 (the third of
# four stages). No teacher.
_base_ = ['../_base_/datasets/imagenet_bs32_replay.py', 'mmpretrain::_base_/schedules/imagenet_bs256.py',
          '../_base_/default_runtime.py']
model = dict(
    type='kdplug.Distiller',
    task=dict(type='ClassificationTask'),
    student=dict(cfg_path='mmpretrain::resnet/resnet18_8xb32_in1k.py'),
    teacher=dict(type='WeakHeadTeacher', position='layer3'),  # the weak head on the third of four stages
    losses=dict(uskd=dict(type='USKDLoss', alpha=1.0, beta=0.1, mu=0.005)),
)
