# coco128 12-epoch distillation: the coco128 data and schedule, the Cascade R-CNN R-101 -> R-50 pair (teacher trained
# on coco128).
_base_ = ['./coco128_detection.py', './schedule_coco128_12e.py', './distill_runtime.py',
          './cascade-rcnn_r101_r50_fpn_coco128.py']
