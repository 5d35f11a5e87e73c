# KD (Hinton 2015), CIFAR recipe (T = 4, w_ce = 0.1, w_kd = 0.9), from the teacher's cached logits: the student's
# steps cost no teacher forward, and every student of this teacher and data reads the same store. Cache once (every
# crop x flip view of the 10k images, 162 each), then train:
#   python tools/cache_teacher.py configs/demo/kd-cached_resnet20_resnet8_4e_cifar10-10k.py
#   python tools/train.py configs/demo/kd-cached_resnet20_resnet8_4e_cifar10-10k.py
_base_ = ['../_base_/models/resnet20_resnet8_cifar10.py', '../_base_/datasets/cifar10_folder_10k_replay.py',
          '../_base_/schedules/cifar_short.py', '../_base_/distill_runtime.py']
model = dict(
    student=dict(head=dict(loss=dict(loss_weight=0.1))),
    teacher=dict(type='CachedTeacher', store='work_dirs/teacher_resnet20_4e_cifar10-10k/teacher_cache_train_10000'),
    losses=dict(kd=dict(type='KDLoss', temperature=4.0, loss_weight=0.9)),
)
