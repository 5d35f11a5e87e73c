# COCO: teacher Cascade R-CNN R-101-FPN 1x (mmdet's released checkpoint, 42.0 box AP) -> student Cascade R-CNN
# R-50-FPN 1x (40.3 box AP alone, mmdet's model zoo). Distillation configs add `losses`.
# Each of the three RoI-head stages is distilled from the same stage of the teacher, on the RoIs the student sampled
# for that stage; its distillation losses are logged as distill.s<i>.loss_<name> and weighted by the task's
# stage_weights, by default the student's own stage_loss_weights (mmdet: 1, 0.5, 0.25), as its stage losses are.
# The student's backbone starts from torchvision's ImageNet ResNet-50, as in mmdet's own config.
model = dict(
    type='kdplug.Distiller',
    # every sampled RoI is distilled; 'exclude' or a float weight: docs/detection.md
    task=dict(type='TwoStageDetectionTask', background='include'),
    student=dict(cfg_path='mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'),
    teacher=dict(type='CheckpointTeacher', model=dict(cfg_path='mmdet::cascade_rcnn/cascade-rcnn_r101_fpn_1x_coco.py'),
                 checkpoint='https://download.openmmlab.com/mmdetection/v2.0/cascade_rcnn/'
                            'cascade_rcnn_r101_fpn_1x_coco/cascade_rcnn_r101_fpn_1x_coco_20200317-0b6a2fbf.pth'),
)
