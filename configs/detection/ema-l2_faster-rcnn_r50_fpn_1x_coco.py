# EMA self-teacher with L2-normalised logits, from the appendix of Kong, Gao, Li, Hong, Liu, Wang, Xie and Qu,
# "En-Compactness: Self-Distillation Embedding & Contrastive Generation for Generalized Zero-Shot Learning" (ICCE),
# CVPR 2022 (CVF open access, linked in configs/ema-l2/README.md; no arXiv id). The paper has no detection results:
# kdplug's choice is to distil the RoI classification logits of Faster R-CNN R-50-FPN from an exponential moving
# average of itself (no separate teacher, no checkpoint), scored by the average's box head on the RoIs the student
# sampled: theta_T <- xi theta_T + (1 - xi) theta_S after every optimizer step
# (kdplug.EMATeacherHook), xi = 0.99; KD on L2-normalised logits, tau = 1, w_kd = 10 (kdplug's choice, as in
# configs/ema-l2: L2-normalised logits give small KL values), the student's own detection losses keep their weights.
# The EMA copy is saved in the run's checkpoints (teacher.ema.*), so a resumed run continues the same average; the
# export (tools/export_student.py) drops it.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_1x_coco.py']
model = dict(
    teacher=dict(_delete_=True, type='EMATeacher', xi=0.99),
    losses=dict(kd=dict(type='KDLoss', temperature=1.0, logit_norm='l2', loss_weight=10.0)),
)
# The base's kdplug.TeacherEvalHook is left out: before the first step the EMA teacher is not yet an average of the
# student (it becomes a copy of it at the first step), so evaluating it would measure an untrained detector.
custom_hooks = [dict(type='kdplug.EMATeacherHook')]
