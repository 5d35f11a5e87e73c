# CIFAR-10 as image folders: <data_root>/{train,test}/<class>/ images (JPEG or PNG) (tools/prepare_data.py
# cifar10 writes this layout from the official archive).
dataset_type = 'CustomDataset'
data_root = 'data/cifar10'
# the class names (the folders' alphabetical order, CIFAR-10's label order): with a list file (ann_file) the dataset
# knows no names otherwise, and the checkpoints of a run record them (a teacher trained on other classes is refused)
metainfo = dict(classes=('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'))

data_preprocessor = dict(
    num_classes=10,
    # RGB, 0-255 scale; images are read as BGR, hence to_rgb
    mean=[125.307, 122.961, 113.8575],
    std=[51.5865, 50.847, 51.255],
    to_rgb=True,
)

# kdplug.CachedLoadImageFromFile: mmcv's LoadImageFromFile that decodes each image once per process and serves later
# epochs from memory (150 MB for all of CIFAR-10), as mmpretrain's CIFAR datasets hold decoded arrays: same pixels.
# kdplug.ReplayRandomCrop / ReplayRandomFlip: the pixels and random draws of mmpretrain's RandomCrop and mmcv's
# RandomFlip, with less work per image; PackInputs keeps the view each drew, where an offline teacher
# (docs/teacher_cache.md) finds the teacher's logits of that view
train_pipeline = [
    dict(type='kdplug.CachedLoadImageFromFile'),
    dict(type='kdplug.ReplayRandomCrop', crop_size=32, padding=4),
    dict(type='kdplug.ReplayRandomFlip', prob=0.5, direction='horizontal'),
    # mmpretrain's default meta keys, and the view
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                                       'flip_direction', 'view')),
]
test_pipeline = [
    dict(type='kdplug.CachedLoadImageFromFile'),
    dict(type='PackInputs'),
]

# pin_memory and default_collate (batches stacked in the workers, not in the main process) as mmpretrain's own
# tools/train.py sets them: the same speed whichever tool runs the config
train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', metainfo=metainfo,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='test', metainfo=metainfo,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
