# coco128: teacher Faster R-CNN R-101-FPN trained on coco128 by configs/detection/teachers/ -> student R-50-FPN.
# Train the teacher first: python tools/train.py configs/detection/teachers/faster-rcnn_r101_fpn_24e_coco128.py
model = dict(
    type='kdplug.Distiller',
    # every sampled RoI is distilled; 'exclude' or a float weight: docs/detection.md
    task=dict(type='TwoStageDetectionTask', background='include'),
    student=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    teacher=dict(type='CheckpointTeacher', model=dict(cfg_path='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py'),
                 checkpoint='work_dirs/faster-rcnn_r101_fpn_24e_coco128/epoch_24.pth'),
)
