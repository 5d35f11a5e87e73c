# coco128: teacher Cascade R-CNN R-101-FPN trained on coco128 by configs/detection/teachers/ -> student Cascade R-CNN
# R-50-FPN (mmdet's configs, ImageNet-initialised backbones). Distillation configs add `losses`.
# Train the teacher first: python tools/train.py configs/detection/teachers/cascade-rcnn_r101_fpn_24e_coco128.py
# Each of the three RoI-head stages is distilled from the same stage of the teacher, on the RoIs the student sampled
# for that stage; its distillation losses are logged as distill.s<i>.loss_<name> and weighted by the task's
# stage_weights, by default the student's own stage_loss_weights (mmdet: 1, 0.5, 0.25), as its stage losses are.
model = dict(
    type='kdplug.Distiller',
    # every sampled RoI is distilled; 'exclude' or a float weight: docs/detection.md
    task=dict(type='TwoStageDetectionTask', background='include'),
    student=dict(cfg_path='mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'),
    teacher=dict(type='CheckpointTeacher', model=dict(cfg_path='mmdet::cascade_rcnn/cascade-rcnn_r101_fpn_1x_coco.py'),
                 checkpoint='work_dirs/cascade-rcnn_r101_fpn_24e_coco128/epoch_24.pth'),
)
