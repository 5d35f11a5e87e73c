# The strong view of MLKD's two-view pipelines (the *_multiview.py dataset files), as mmpretrain transforms: the
# FixMatch-style RandAugment of the MLKD authors (Jin-Ying/Multi-Level-Logit-Distillation at commit 5ee473f,
# mdistiller/dataset/cifar100.py lines 272-305, used by get_cifar100_train_transform_strong, lines 321-343):
# two of these 14 operations drawn with replacement (random.choices; mmpretrain's np.random.choice), each applied
# always, at a magnitude drawn uniformly from its range, then a Cutout of random size (set per dataset in the
# *_multiview.py files: its size and fill depend on the image size and channel order).
#
# Their op (range) -> here: mmpretrain's op at magnitude_std='inf' (uniform over the range), prob=1.0:
# * Brightness, Color, Contrast, Sharpness: PIL enhance factor in [0.05, 0.95] (never brighter / sharper); mmpretrain
#   uses factor 1 + magnitude, so magnitude in [-0.95, -0.05], never negated.
# * Identity: Brightness at factor 1.
# * Posterize: int(U(4, 8)) bits, 4-7; mmpretrain rounds up, ceil(U(3, 7)): the same 4-7, each 1/4.
# * Rotate [-30, 30] deg; ShearX / ShearY [-0.3, 0.3]; TranslateX / TranslateY [-0.3, 0.3] of the size: mmpretrain
#   draws the size in [0, max] and negates it half the time (the same uniform law); PIL fills with black and
#   resamples with nearest, hence pad_val=0 and interpolation='nearest'.
# * Solarize threshold [0, 256]; AutoContrast; Equalize.
# What differs: mmcv's implementations of these ops instead of PIL's (the same definitions; rounding may differ by
# one grey level), and the Cutout square is int(size) pixels wide where PIL's inclusive rectangle draws one more.
fixmatch_policies = [
    dict(type='AutoContrast', prob=1.0),
    dict(type='Brightness', magnitude_range=(-0.95, -0.05), random_negative_prob=0.0, prob=1.0),
    dict(type='ColorTransform', magnitude_range=(-0.95, -0.05), random_negative_prob=0.0, prob=1.0),
    dict(type='Contrast', magnitude_range=(-0.95, -0.05), random_negative_prob=0.0, prob=1.0),
    dict(type='Equalize', prob=1.0),
    dict(type='Brightness', magnitude=0.0, prob=1.0),  # Identity
    dict(type='Posterize', magnitude_range=(3, 7), prob=1.0),
    dict(type='Rotate', magnitude_range=(0, 30), prob=1.0),
    dict(type='Sharpness', magnitude_range=(-0.95, -0.05), random_negative_prob=0.0, prob=1.0),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='horizontal', interpolation='nearest', prob=1.0),
    dict(type='Shear', magnitude_range=(0, 0.3), direction='vertical', interpolation='nearest', prob=1.0),
    dict(type='Solarize', magnitude_range=(0, 256), prob=1.0),
    dict(type='Translate', magnitude_range=(0, 0.3), direction='horizontal', prob=1.0),
    dict(type='Translate', magnitude_range=(0, 0.3), direction='vertical', prob=1.0),
]
fixmatch_randaugment = dict(type='RandAugment', policies=fixmatch_policies, num_policies=2, magnitude_level=10,
                            magnitude_std='inf', total_level=10, hparams=dict(pad_val=0))
