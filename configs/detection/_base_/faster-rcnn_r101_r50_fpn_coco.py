# COCO: teacher Faster R-CNN R-101-FPN 2x (mmdet's released checkpoint, 39.8 box AP) -> student R-50-FPN 1x (37.4 box AP
# alone), as in NKD's Table 5. Distillation configs add `losses` (and optionally the task's `background`).
# The student's backbone starts from torchvision's ImageNet ResNet-50, as in mmdet's own config.
model = dict(
    type='kdplug.Distiller',
    # every sampled RoI is distilled; 'exclude' or a float weight: docs/detection.md
    task=dict(type='TwoStageDetectionTask', background='include'),
    student=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    teacher=dict(type='CheckpointTeacher', model=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py'),
                 checkpoint='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/'
                            'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth'),
)
