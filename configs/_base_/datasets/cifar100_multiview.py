# CIFAR-100 with two views of every training image, for MLKD (Jin, Wang and Lin, "Multi-Level Logit Distillation",
# CVPR 2023): the weak view is cifar100.py's recipe (crop + flip), the strong view the same followed by the MLKD
# authors' RandAugment + Cutout (randaugment_fixmatch_multiview.py). mmpretrain's MultiView runs the two pipelines
# on copies of each image, PackInputs packs the list, default_collate stacks each view: the model gets
# inputs = [weak (N, 3, 32, 32), strong (N, 3, 32, 32)]. mmpretrain's ClsDataPreprocessor does not take a list of
# views (it would stack them into one tensor), its SelfSupDataPreprocessor normalises each view: used here, for
# validation (one view) too. No mixup / cutmix with it (kdplug refuses the student's batch augments).
_base_ = ['./cifar100.py', './randaugment_fixmatch_multiview.py']

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
# Cutout: a square of U(0, 0.5) x 32 pixels at a uniform centre, filled with the authors' (125, 123, 114) (RGB)
strong_pipeline = weak_pipeline + [
    {{_base_.fixmatch_randaugment}},
    dict(type='Cutout', magnitude_range=(0, 16), magnitude_level=10, magnitude_std='inf', total_level=10,
         pad_val=(125, 123, 114), prob=1.0),
]
train_pipeline = [
    dict(type='MultiView', num_views=[1, 1], transforms=[weak_pipeline, strong_pipeline]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
