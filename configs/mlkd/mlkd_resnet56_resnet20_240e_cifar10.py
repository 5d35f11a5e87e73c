# MLKD (Jin, Wang and Lin, "Multi-Level Logit Distillation", CVPR 2023): instance, batch and class alignment at
# T in (4, 3, 5, 2, 6) on a weak and a strong view of every image, the authors' computation,
# w_ce = 0.1 (on both views), w_kd = 0.9, SGD lr 0.025. Sources: configs/mlkd/README.md.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder_multiview.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(mlkd=dict(type='MLKDLoss', temperature=4.0, views=2, loss_weight=0.9)),  # w_kd
)
optim_wrapper = dict(optimizer=dict(lr=0.025))  # the MLKD authors' lr (kdplug's CIFAR schedules: 0.05)
