# COCO 1x distillation: mmdet's COCO data, 1x schedule (8 GPUs x 2 images, lr 0.02) and runtime, the Cascade R-CNN
# R-101 -> R-50 pair.
_base_ = ['mmdet::_base_/datasets/coco_detection.py', 'mmdet::_base_/schedules/schedule_1x.py',
          './distill_runtime.py', './cascade-rcnn_r101_r50_fpn_coco.py']
