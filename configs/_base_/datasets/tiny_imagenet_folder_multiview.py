# Tiny-ImageNet-200 (tiny_imagenet_folder.py, 64x64) with two views of every training image, for MLKD: the weak
# view is tiny_imagenet_folder.py's recipe (crop with padding 8 + flip), the strong view the same followed by the
# MLKD authors' RandAugment + Cutout (randaugment_fixmatch_multiview.py), as in cifar100_multiview.py (which says how
# the views reach the model). The authors ran CIFAR-100 and ImageNet only: the sizes relative to the image
# (translation 0.3, Cutout up to 0.5 of the side, so 32 pixels here) are theirs, the rest is the CIFAR recipe.
_base_ = ['./tiny_imagenet_folder.py', './randaugment_fixmatch_multiview.py']

data_preprocessor = dict(
    _delete_=True,
    type='mmpretrain.SelfSupDataPreprocessor',
    # the single-view dataset config's normalisation and channel order
    mean={{_base_.data_preprocessor.mean}},
    std={{_base_.data_preprocessor.std}},
    to_rgb={{_base_.data_preprocessor.to_rgb}},
)

weak_pipeline = [
    dict(type='RandomCrop', crop_size=64, padding=8),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
]
# Cutout: a square of U(0, 0.5) x 64 pixels at a uniform centre, the authors' fill (125, 123, 114) in BGR order
strong_pipeline = weak_pipeline + [
    {{_base_.fixmatch_randaugment}},
    dict(type='Cutout', magnitude_range=(0, 32), magnitude_level=10, magnitude_std='inf', total_level=10,
         pad_val=(114, 123, 125), prob=1.0),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=[1, 1], transforms=[weak_pipeline, strong_pipeline]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
