# resnet56 on tiny-imagenet, a short schedule for quick runs: 30 epochs, cosine (one warm-up epoch).
_base_ = ['./resnet56_240e_tiny-imagenet.py']
max_epochs = 30
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
