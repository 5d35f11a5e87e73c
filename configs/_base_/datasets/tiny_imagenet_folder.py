# Tiny-ImageNet-200 (64x64) in its original layout: <data_root>/train/<wnid>/images/*.JPEG for training (labels from
# the sorted wnid folders), <data_root>/val/images/*.JPEG with meta/val.txt (written by
# `python tools/prepare_data.py tiny-imagenet`, in the same label order) for validation.
dataset_type = 'CustomDataset'
data_root = 'data/tiny-imagenet-200'

data_preprocessor = dict(
    num_classes=200,
    # ImageNet statistics, RGB, 0-255 scale; images are read as BGR, hence to_rgb
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)

# kdplug's replayable pad-and-crop and flip: the pixels and random draws of mmpretrain's RandomCrop and mmcv's
# RandomFlip, with less work per image; PackInputs keeps the view each drew, where an offline teacher
# (docs/teacher_cache.md) finds the teacher's logits of that view
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='kdplug.ReplayRandomCrop', crop_size=64, padding=8),
    dict(type='kdplug.ReplayRandomFlip', prob=0.5, direction='horizontal'),
    # mmpretrain's default meta keys, and the view
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                                       'flip_direction', 'view')),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

# pin_memory and default_collate (batches stacked in the workers, not in the main process) as mmpretrain's own
# tools/train.py sets them: the same speed whichever tool runs the config
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', ann_file='meta/val.txt',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
