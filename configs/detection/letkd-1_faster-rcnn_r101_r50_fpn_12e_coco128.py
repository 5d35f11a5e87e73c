# letKD: Gorgun, Gurbuz and Alatan, "Knowledge Distillation Layer that Lets the Student Decide", BMVC 2023,
# arXiv:2309.02843. letKD-1 on Faster R-CNN (the paper distils classifiers only; kdplug's choices below): a KD layer
# (kdplug.LetKDLayer) inserted into the R-50 student's backbone predicts, at every position, the R-101 teacher's soft
# assignment to K_penult = 4096 k-means codewords of its features; alpha_penult = 1, loss weight 1, the student's
# own detection losses keep their weights. Position: the paper's penultimate level is the last feature map of the
# backbone, the one a classifier pools before its linear layer; in a ResNet-FPN detector that is the output of
# 'layer4' (C5, 2048 channels, stride 32), which the FPN then reads through the layer (so the layer stays in the
# student at inference, as in the paper). The teacher's feature is its own 'layer4' output (same channels, same
# size). The intermediate level (letKD-2) needs one class label per image and does not apply to detection.
# 1. train the teacher (configs/detection/teachers/faster-rcnn_r101_fpn_24e_coco128.py);
# 2. python tools/fit_codewords.py <this config> writes `codewords`: k-means of the teacher's 'layer4' features at
#    every position of the training images (test pipeline; --max-images N for a random subset), section 'layer4';
# 3. python tools/train.py <this config>. See docs/letkd.md.
_base_ = ['./_base_/faster-rcnn_r101_r50_fpn_12e_coco128.py']
codewords = 'work_dirs/letkd-1_faster-rcnn_r101_r50_fpn_12e_coco128/codewords.pth'
model = dict(
    student=dict(backbone=dict(
        _delete_=True,
        type='kdplug.BackboneWithModules',
        # mmdet's R-50 backbone of faster-rcnn_r50_fpn_1x_coco.py, unchanged
        backbone=dict(type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch',
                      init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
        modules=dict(
            layer4=dict(type='kdplug.LetKDLayer', in_channels=2048, num_codewords=4096, alpha=1.0),
        ))),
    losses=dict(
        letkd_penult=dict(type='LetKDPenultimateLoss', student_module='layer4', teacher_stage='layer4',
                          codewords=codewords),
    ),
)
