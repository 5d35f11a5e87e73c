# A short schedule for quick runs on CPU or one GPU: the CIFAR recipe's lr, momentum and weight decay, with Nesterov
# momentum (the 240-epoch recipe has plain momentum), and a cosine decay to 0 over max_epochs (change both together).
# Used by configs/demo and the *_short_* configs. Validated after every epoch (best and last top-1).
max_epochs = 4
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)
