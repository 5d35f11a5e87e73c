# CTKD (Li et al., AAAI 2023, arXiv:2211.16231): global learned T = 1 + 20 sigmoid(.), w_ce = 0.1, w_kd = 0.9,
# lambda 0 -> 1 over 2 epochs (cosine).
# A short schedule for quick runs (30 epochs, cosine); the curriculum scaled: 10 of 240 epochs -> 2 of 30.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_30e.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),  # w_ce
    teacher=dict(checkpoint='work_dirs/resnet56_30e_cifar10/epoch_30.pth'),
    losses=dict(ctkd=dict(type='CTKDLoss', t_start=1.0, t_range=20.0, loss_weight=0.9)),  # w_kd
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'),
                dict(type='kdplug.CTKDCurriculumHook', lambda_min=0.0, lambda_max=1.0, loops=2)]
