# CIFAR-100 through mmpretrain's own dataset class, which downloads the official files into data_root.
dataset_type = 'CIFAR100'
data_root = 'data/cifar100'

data_preprocessor = dict(
    num_classes=100,
    # RGB, 0-255 scale (mmpretrain's CIFAR datasets yield RGB arrays)
    mean=[129.304, 124.070, 112.434],
    std=[68.170, 65.392, 70.418],
    to_rgb=False,
)

# kdplug's replayable pad-and-crop and flip: the pixels and random draws of mmpretrain's RandomCrop and mmcv's
# RandomFlip, with less work per image; PackInputs keeps the view each drew, where an offline teacher
# (docs/teacher_cache.md) finds the teacher's logits of that view
train_pipeline = [
    dict(type='kdplug.ReplayRandomCrop', crop_size=32, padding=4),
    dict(type='kdplug.ReplayRandomFlip', prob=0.5, direction='horizontal'),
    # mmpretrain's default meta keys, and the view
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                                       'flip_direction', 'view')),
]
test_pipeline = [dict(type='PackInputs')]

# pin_memory and default_collate (batches stacked in the workers, not in the main process) as mmpretrain's own
# tools/train.py sets them: the same speed whichever tool runs the config
train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
