# coco128 (tools/prepare_data.py coco128): 128 COCO train2017 images for training, 128 val2017 images for COCO-style
# evaluation, 80 COCO classes. mmdet's COCO dataset settings with the images at their own size (at most 640 px)
# rather than upscaled to 1333x800: a short, cheap benchmark, not a COCO number.
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

data_root = 'data/coco128/'
image_scale = (640, 640)
train_pipeline = [
    dict(type='kdplug.CheckedLoadImageFromFile'),  # LoadImageFromFile whose errors name a damaged image's file
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# mmcv's loader by name, which mmdet's DetInferencer looks for in the test pipeline; kdplug's tools/train.py and
# tools/test.py run it as kdplug.CheckedLoadImageFromFile (kdplug.tools.name_damaged_images)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# workers started anew each epoch (mmdet's base keeps them): a resumed run then draws the flips an uninterrupted one
# draws (kdplug.RandomStateHook); starting two workers costs well under a second an epoch
train_dataloader = dict(batch_size=4, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
