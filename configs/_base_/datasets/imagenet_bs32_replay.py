# mmpretrain's ImageNet base (batch 32 per GPU), with kdplug's replayable random-resized crop and flip: the pixels and
# random draws of mmpretrain's RandomResizedCrop and mmcv's RandomFlip; PackInputs keeps the view each drew, where an
# offline teacher (docs/teacher_cache.md, tools/cache_teacher.py --mode epochs) finds the teacher's logits of that view.
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py']

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='kdplug.ReplayRandomResizedCrop', scale=224),
    dict(type='kdplug.ReplayRandomFlip', prob=0.5, direction='horizontal'),
    # mmpretrain's default meta keys, and the view
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                                       'flip_direction', 'view')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
