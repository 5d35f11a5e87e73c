# MLKD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): MLKD (Jin, Wang and Lin, CVPR 2023) with
# z-scored logits in its instance terms, base temperature 2 (T in (2, 3, 5, 2, 6)), w_ce = 0.1 (on both views),
# w_kd = 9, the authors' computation, SGD lr 0.025. Sources: configs/mlkd/README.md.
# A short schedule for quick runs (30 epochs, cosine).
_base_ = ['../_base_/models/resnet56_resnet20_tiny-imagenet.py',
          '../_base_/datasets/tiny_imagenet_folder_multiview.py',
          '../_base_/schedules/cifar_30e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    teacher=dict(checkpoint='work_dirs/resnet56_30e_tiny-imagenet/epoch_30.pth'),
    losses=dict(mlkd=dict(type='MLKDLoss', temperature=2.0, views=2, logit_norm='zscore',
                          loss_weight=9.0)),  # w_kd
)
optim_wrapper = dict(optimizer=dict(lr=0.025))  # the MLKD authors' lr (kdplug's CIFAR schedules: 0.05)
