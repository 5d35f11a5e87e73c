# The coco128 Cascade R-CNN teacher, plain mmdet: Cascade R-CNN R-101-FPN (ImageNet-initialised backbone), 24 epochs
# on coco128, as teachers/faster-rcnn_r101_fpn_24e_coco128.py for Faster R-CNN.
# python tools/train.py configs/detection/teachers/cascade-rcnn_r101_fpn_24e_coco128.py
# -> work_dirs/cascade-rcnn_r101_fpn_24e_coco128/epoch_24.pth, the teacher checkpoint of the
# *_cascade-rcnn_*_coco128.py distillation configs.
_base_ = ['mmdet::_base_/models/cascade-rcnn_r50_fpn.py', '../_base_/coco128_detection.py',
          '../_base_/schedule_coco128_12e.py', 'mmdet::_base_/default_runtime.py']
model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
train_cfg = dict(max_epochs=24, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1),
]
# mmengine's CheckpointHook with crash-safe writes (write, rename, then remove old ones); the random state in every
# checkpoint (a resumed run draws the augmentations an uninterrupted one draws)
default_hooks = dict(checkpoint=dict(type='kdplug.AtomicCheckpointHook', interval=1),
                     random_state=dict(type='kdplug.RandomStateHook'))
