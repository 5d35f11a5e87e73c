# letKD (Gorgun et al., "Knowledge Distillation Layer that Lets the Student Decide", BMVC 2023, arXiv:2309.02843).
# letKD-1: the KD layer at the penultimate stage, predicting the teacher's soft assignment to
# K_penult = 4096 k-means codewords of its features; alpha_penult = 1, loss weight 1, w_ce = 1.
# Paper (Table 1, CIFAR-100 top-1 %): 75.01 +- 0.09 (teacher 75.61, student alone 71.98).
# 1. train the teacher; 2. python tools/fit_codewords.py configs/letkd/letkd-1_wrn40_2_wrn40_1_240e_cifar100.py
#    (writes `codewords`); 3. python tools/train.py <this config>. See docs/letkd.md.
_base_ = ['../_base_/models/wrn40_2_wrn40_1_cifar100.py', '../_base_/datasets/cifar100.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
optim_wrapper = dict(optimizer=dict(nesterov=True))  # letKD's supplement, section 2.2: Nesterov 0.9
codewords = 'work_dirs/letkd-1_wrn40_2_wrn40_1_240e_cifar100/codewords.pth'
model = dict(
    student=dict(backbone=dict(
        _delete_=True,
        type='kdplug.BackboneWithModules',
        backbone=dict(type='kdplug.WRN40_1'),
        modules=dict(
            out=dict(type='kdplug.LetKDLayer', in_channels=64, num_codewords=4096, alpha=1.0),
        ))),
    losses=dict(
        letkd_penult=dict(type='LetKDPenultimateLoss', student_module='out', codewords=codewords),
    ),
)
