# The ImageNet recipe of NormKD and DKD + NormKD (Chi et al., "NormKD: Normalized Logits for Knowledge
# Distillation", arXiv:2308.00520, section 4.3): batch 512 (set in the config: 4 GPUs x 128), SGD with momentum 0.9
# (plain: section 4.3 says Nesterov, the authors' mdistiller/engine/trainer.py builds SGD without it, as for CIFAR),
# lr 0.2 divided by 10 at epochs 30, 60 and 90, weight decay 1e-4, 100 epochs. Validated after every epoch.
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.2, momentum=0.9, weight_decay=1e-4, nesterov=False))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)
