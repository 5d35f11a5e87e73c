# KD (Hinton 2015), CIFAR recipe (T = 4, w_ce = 0.1, w_kd = 0.9), from the teacher's cached logits: the student's
# steps cost no teacher forward, and every student of this teacher and data reads the same store. Cache once (every
# crop x flip view of the 10k images, 162 each), then train:
#   python tools/cache_teacher.py configs/demo/kd-cached_resnet20_resnet8_4e_cifar10-10k.py
#   python tools/train.py configs/demo/kd-cached_resnet20_resnet8_4e_cifar10-10k.py
# (tools/run_demo.py caches the 4 seeded epochs its students draw instead: --mode epochs, 10k views per epoch.)
_base_ = ['./kd_resnet20_resnet8_4e_cifar10-10k.py']
model = dict(teacher=dict(type='CachedTeacher', store='work_dirs/teacher_resnet20_4e_cifar10-10k/teacher_cache'))
