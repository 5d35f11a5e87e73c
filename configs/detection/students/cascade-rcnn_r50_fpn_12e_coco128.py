# The coco128 Cascade R-CNN student alone, plain mmdet: Cascade R-CNN R-50-FPN, the same data, schedule and seed as
# the *_cascade-rcnn_*_12e_coco128.py distillation configs: the baseline they are measured against.
_base_ = ['mmdet::_base_/models/cascade-rcnn_r50_fpn.py', '../_base_/coco128_detection.py',
          '../_base_/schedule_coco128_12e.py', 'mmdet::_base_/default_runtime.py']
# mmengine's CheckpointHook with crash-safe writes (write, rename, then remove old ones); the random state in every
# checkpoint (a resumed run draws the augmentations an uninterrupted one draws)
default_hooks = dict(checkpoint=dict(type='kdplug.AtomicCheckpointHook', interval=1),
                     random_state=dict(type='kdplug.RandomStateHook'))
