# letKD (Gorgun et al., "Knowledge Distillation Layer that Lets the Student Decide", BMVC 2023, arXiv:2309.02843).
# letKD-1: the KD layer at the penultimate stage, predicting the teacher's soft assignment to
# K_penult = 4096 k-means codewords of its features; alpha_penult = 1, loss weight 1, w_ce = 1.
# CIFAR-10 read from image folders (data/cifar10, see tools/prepare_data.py): no paper numbers.
# 1. train the teacher; 2. python tools/fit_codewords.py configs/letkd/letkd-1_resnet56_resnet20_240e_cifar10.py
#    (writes `codewords`); 3. python tools/train.py <this config>. See docs/letkd.md.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
optim_wrapper = dict(optimizer=dict(nesterov=True))  # letKD's supplement, section 2.2: Nesterov 0.9
codewords = 'work_dirs/letkd-1_resnet56_resnet20_240e_cifar10/codewords.pth'
model = dict(
    student=dict(backbone=dict(
        _delete_=True,
        type='kdplug.BackboneWithModules',
        backbone=dict(type='kdplug.ResNet20'),
        modules=dict(
            out=dict(type='kdplug.LetKDLayer', in_channels=64, num_codewords=4096, alpha=1.0),
        ))),
    losses=dict(
        letkd_penult=dict(type='LetKDPenultimateLoss', student_module='out', codewords=codewords),
    ),
)
