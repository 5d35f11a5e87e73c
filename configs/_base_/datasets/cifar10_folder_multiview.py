# CIFAR-10 image folders (cifar10_folder.py) with two views of every training image, for MLKD: the weak view is
# cifar10_folder.py's recipe (crop + flip), the strong view the same followed by the MLKD authors' RandAugment +
# Cutout (randaugment_fixmatch_multiview.py), as in cifar100_multiview.py (which says how the views reach the model
# and why mmpretrain's SelfSupDataPreprocessor normalises them).
_base_ = ['./cifar10_folder.py', './randaugment_fixmatch_multiview.py']

data_preprocessor = dict(
    _delete_=True,
    type='mmpretrain.SelfSupDataPreprocessor',
    # the single-view dataset config's normalisation and channel order
    mean={{_base_.data_preprocessor.mean}},
    std={{_base_.data_preprocessor.std}},
    to_rgb={{_base_.data_preprocessor.to_rgb}},
)

weak_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
]
# Cutout: a square of U(0, 0.5) x 32 pixels at a uniform centre, the authors' fill (125, 123, 114) in BGR order
strong_pipeline = weak_pipeline + [
    {{_base_.fixmatch_randaugment}},
    dict(type='Cutout', magnitude_range=(0, 16), magnitude_level=10, magnitude_std='inf', total_level=10,
         pad_val=(114, 123, 125), prob=1.0),
]
train_pipeline = [
    dict(type='kdplug.CachedLoadImageFromFile'),
    dict(type='MultiView', num_views=[1, 1], transforms=[weak_pipeline, strong_pipeline]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
