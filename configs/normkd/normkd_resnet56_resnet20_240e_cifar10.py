# NormKD: t_norm = 2, w_ce = 0.1, w_kd = 0.9, the paper's CIFAR-100 values (section 4.3) and the defaults of
# the authors' gizi1/NormKD configs/cifar100/NormKD/res56_res20.yaml.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(normkd=dict(type='NormKDLoss', t_norm=2.0, loss_weight=0.9)),
)
