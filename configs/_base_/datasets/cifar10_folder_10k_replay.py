# cifar10_folder_10k.py with each image's view (crop offset, flip), drawn by kdplug's replayable pad-and-crop and
# flip, packed into its data sample, as an offline teacher (teacher=dict(type='CachedTeacher', ...)) needs to find
# the teacher's logits of that view.
_base_ = ['./cifar10_folder_10k.py']

train_pipeline = [
    dict(type='kdplug.CachedLoadImageFromFile'),
    dict(type='kdplug.ReplayRandomCrop', crop_size=32, padding=4),
    dict(type='kdplug.ReplayRandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'flip', 'flip_direction',
                                       'view')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
