# The CIFAR-100 recipe of DKD / NormKD / logit standardization: SGD with momentum 0.9, lr 0.05, wd 5e-4, batch 64,
# 240 epochs, lr x0.1 at 150, 180 and 210. (MobileNet / ShuffleNet students use lr 0.01.) Plain momentum, as the
# authors' trainers that made the papers' numbers build it (mdistiller/engine/trainer.py and its copies in the
# logit-standardization, CTKD and MLKD code; cls_KD's mmcls schedule); NormKD's section 4.3 says Nesterov, its
# trainer has none. letKD's configs set Nesterov (its supplement, section 2.2).
# Validated after every epoch: the papers report the best top-1 over all epochs (the logs give best and last).
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)
