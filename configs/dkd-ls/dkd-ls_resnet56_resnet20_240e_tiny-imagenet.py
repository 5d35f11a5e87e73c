# DKD + logit standardization (Sun et al., CVPR 2024, arXiv:2403.01427): z-score, base T = 3, alpha = 18,
# beta = 36, warm-up 20 epochs: the authors' run of the pair (sunshangquan/logit-standardization-KD, logs/DKD/
# dkd,resnet56,resnet20,3,18,2.0.txt: base T 3, w_kd 18, DKD beta 2;
# their tools/train.py multiplies alpha and beta by w_kd).
_base_ = ['../_base_/models/resnet56_resnet20_tiny-imagenet.py', '../_base_/datasets/tiny_imagenet_folder.py',
          '../_base_/schedules/cifar_240e.py', '../_base_/distill_runtime.py']
model = dict(
    losses=dict(dkd=dict(type='DKDLoss', alpha=18.0, beta=36.0, temperature=3.0, logit_norm='zscore')),
)
custom_hooks = [dict(type='kdplug.TeacherEvalHook'), dict(type='kdplug.LossWarmupHook', warmup=20, losses=['dkd'])]
