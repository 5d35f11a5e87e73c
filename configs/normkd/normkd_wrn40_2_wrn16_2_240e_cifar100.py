# NormKD: t_norm = 2, w_ce = 0.1, w_kd = 0.9, the paper's values (section 4.3) and the defaults of
# the authors' gizi1/NormKD configs/cifar100/NormKD/wrn40_2_wrn_16_2.yaml.
_base_ = ['../_base_/models/wrn40_2_wrn16_2_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    losses=dict(normkd=dict(type='NormKDLoss', t_norm=2.0, loss_weight=0.9)),
)
