# Runtime shared by teacher training and distillation (mmpretrain's conventions).
default_scope = 'mmpretrain'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook with crash-safe writes (write, rename, then remove old ones)
    checkpoint=dict(type='kdplug.AtomicCheckpointHook', interval=10, max_keep_ckpts=2, save_last=True,
                    save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # the main process's random state in every checkpoint, given back on resume: a resumed run draws the views an
    # uninterrupted one draws (and an epochs-mode teacher cache serves it)
    random_state=dict(type='kdplug.RandomStateHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)

env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
