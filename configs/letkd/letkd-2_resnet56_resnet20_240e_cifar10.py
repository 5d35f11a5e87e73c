# letKD (Gorgun et al., "Knowledge Distillation Layer that Lets the Student Decide", BMVC 2023, arXiv:2309.02843).
# letKD-2: the KD layer after the first block of the last stage, as the authors' code places it (LDA, then
# K_inter = 8 sub-classes per class:
# 10 x 8 = 80 assignments) and at the penultimate stage (K_penult = 4096 k-means codewords);
# alpha_inter = alpha_penult = 1, loss weights 1, w_ce = 1.
# CIFAR-10 read from image folders (data/cifar10, see tools/prepare_data.py): no paper numbers.
# 1. train the teacher; 2. python tools/fit_codewords.py configs/letkd/letkd-2_resnet56_resnet20_240e_cifar10.py
#    (writes `codewords`); 3. python tools/train.py <this config>. See docs/letkd.md.
_base_ = ['../_base_/models/resnet56_resnet20_cifar10.py', '../_base_/datasets/cifar10_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
optim_wrapper = dict(optimizer=dict(nesterov=True))  # letKD's supplement, section 2.2: Nesterov 0.9
codewords = 'work_dirs/letkd-2_resnet56_resnet20_240e_cifar10/codewords.pth'
model = dict(
    student=dict(backbone=dict(
        _delete_=True,
        type='kdplug.BackboneWithModules',
        backbone=dict(type='kdplug.ResNet20'),
        modules={  # the authors' places: the first block of the last stage, and the penultimate feature
            'layer3.0': dict(type='kdplug.LetKDLayer', in_channels=64, num_codewords=8 * 10, alpha=1.0),
            'out': dict(type='kdplug.LetKDLayer', in_channels=64, num_codewords=4096, alpha=1.0),
        })),
    losses=dict(
        letkd_inter=dict(type='LetKDIntermediateLoss', student_module='layer3.0', codewords=codewords),
        letkd_penult=dict(type='LetKDPenultimateLoss', student_module='out', codewords=codewords),
    ),
)
