"""The offline teacher (tools/cache_teacher.py + CachedTeacher) on real CIFAR-10 images: over several steps of a run
the cached teacher's logits are the online teacher's to float16 rounding, and so are KD, NormKD, KD+LS and DKD; a
store made from another teacher, pipeline or normalisation, or an incomplete one, is refused with what differs."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, require_detection_stack

pytestmark = pytest.mark.usefixtures('one_thread')

IMAGES = 12
REPLAY_PIPELINE = [dict(type='kdplug.CachedLoadImageFromFile'),
                   dict(type='kdplug.ReplayRandomCrop', crop_size=32, padding=4),
                   dict(type='kdplug.ReplayRandomFlip', prob=0.5),
                   dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'view'))]
LOSSES = {'KD': dict(type='KDLoss', temperature=4.0), 'NormKD': dict(type='NormKDLoss'),
          'KD+LS': dict(type='KDLoss', temperature=4.0, logit_norm='zscore'), 'DKD': dict(type='DKDLoss')}


def config(tmp_path, cifar10_root, teacher_checkpoint, pipeline=REPLAY_PIPELINE) -> str:
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs' / 'demo' / 'kd_resnet20_resnet8_4e_cifar10-10k.py'))
    cfg.model.teacher.checkpoint = teacher_checkpoint
    cfg.train_dataloader.dataset.update(data_root=str(cifar10_root), ann_file='', indices=IMAGES,
                                        pipeline=copy.deepcopy(pipeline))
    path = tmp_path / f'cfg_{len(list(tmp_path.glob("cfg_*.py")))}.py'
    cfg.dump(str(path))
    return str(path)


@pytest.fixture(scope='module')
def store(tmp_path_factory, cifar10_root, teacher_checkpoint):
    from kdplug.tools.cache_teacher import main
    tmp = tmp_path_factory.mktemp('cache')
    cfg = config(tmp, cifar10_root, teacher_checkpoint)
    main([cfg, '--out', str(tmp / 'store'), '--device', 'cpu', '--batch-size', '324'])
    return dict(config=cfg, store=str(tmp / 'store'))


def distillers(cfg_path: str, store: str, losses: dict, check_data: bool = True):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from kdplug.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(cfg_path)
    # the run's preprocessor, as mmengine's Runner gives it to the model (the store was made with it)
    online_cfg = dict(copy.deepcopy(cfg.model), losses=losses, data_preprocessor=cfg.data_preprocessor)
    cached_cfg = dict(copy.deepcopy(online_cfg), teacher=dict(
        type='CachedTeacher', store=store, model=cfg.model.teacher.model, checkpoint=cfg.model.teacher.checkpoint))
    online, cached = MODELS.build(online_cfg), MODELS.build(cached_cfg)
    if check_data:  # as kdplug.TeacherDataCheckHook does before training
        cached.teacher.check_data(cfg.train_dataloader.dataset, IMAGES)
    else:  # to reach the step's own checks
        cached.teacher.data_checked = True
    cached.student.load_state_dict(online.student.state_dict())
    return cfg, online, cached


def batches(cfg, steps: int, seed: int):
    from mmengine.runner import Runner
    loader_cfg = dict(copy.deepcopy(cfg.train_dataloader), batch_size=4, num_workers=0, persistent_workers=False)
    loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)
    for epoch in range(steps):
        loader = Runner.build_dataloader(copy.deepcopy(loader_cfg), seed=seed + epoch)
        yield next(iter(loader))


def test_the_store_holds_every_view_of_every_image(store):
    from kdplug.teachers.cache_store import TeacherCacheStore
    opened = TeacherCacheStore.open(store['store'])
    assert opened.header['slots'] == 162 and opened.num_images == IMAGES and opened.logits.dtype == np.float16
    assert opened.done.all() and len({tuple(p) for p in opened.params[:162]}) == 162


def step_seed(name: str) -> int:
    return sorted(LOSSES).index(name) * 10


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_cached_teacher_losses_equal_the_online_teacher_s_to_float16_rounding(store, name):
    """float16 keeps 11 significant bits: each cached logit is within 2^-11 (relative) of the online one, and a
    loss, a smooth function of the logits, within a few times that: rtol 2e-3 (measured: ~1e-5)."""
    cfg, online, cached = distillers(store['config'], store['store'], {name.lower().replace('+', ''): LOSSES[name]})
    online.train(), cached.train()
    for step, batch in enumerate(batches(cfg, steps=4, seed=step_seed(name))):
        data = online.data_preprocessor(batch, training=True)
        out = online.task.student_forward(online.student, data['inputs'], data['data_samples'])
        exact, _ = online.teacher.teach(online.task, data['inputs'], data['data_samples'], out)
        stored, _ = cached.teacher.teach(cached.task, data['inputs'], data['data_samples'], out)
        assert torch.all((stored[0] - exact[0]).abs() <= 2 ** -11 * exact[0].abs() + 1e-6), step
        a = online.loss(data['inputs'], data['data_samples'])
        b = cached.loss(data['inputs'], data['data_samples'])
        for key in a:
            if key.startswith('distill.'):
                torch.testing.assert_close(b[key], a[key], rtol=2e-3, atol=1e-5)


def test_a_store_of_another_teacher_is_refused_at_build(store, tmp_path):
    from mmengine.config import Config

    from kdplug.teachers.cache_store import TeacherCacheError
    cfg = Config.fromfile(store['config'])
    state = torch.load(cfg.model.teacher.checkpoint, weights_only=True)
    state['state_dict']['head.fc.bias'] = state['state_dict']['head.fc.bias'] + 1  # a retrained teacher, say
    cfg.model.teacher.checkpoint = str(tmp_path / 'other.pth')
    torch.save(state, cfg.model.teacher.checkpoint)
    cfg.dump(str(tmp_path / 'cfg.py'))
    with pytest.raises(TeacherCacheError, match='made from another teacher checkpoint'):
        distillers(str(tmp_path / 'cfg.py'), store['store'], {'kd': LOSSES['KD']})
    # a checkpoint moved away is named as missing (it was "another teacher checkpoint": its path against a sha256)
    from kdplug.registry import MODELS
    moved = dict(copy.deepcopy(cfg.model), losses={'kd': LOSSES['KD']}, data_preprocessor=cfg.data_preprocessor,
                 teacher=dict(type='CachedTeacher', store=store['store'], model=cfg.model.teacher.model,
                              checkpoint=str(tmp_path / 'moved.pth')))
    with pytest.raises(TeacherCacheError, match=r"the teacher checkpoint '.*moved.pth' does not exist: the cached "
                                                r'teacher reads it once, to compare its sha256'):
        MODELS.build(moved)


def test_a_store_of_another_channel_order_is_refused_at_build(store, tmp_path):
    """mmpretrain's preprocessor keeps its channel swap as ``to_rgb`` (mmengine's as ``_channel_conversion``): a
    store scored on RGB inputs does not serve a run that feeds the teacher BGR."""
    from mmengine.config import Config

    from kdplug.teachers.cache_store import TeacherCacheError
    cfg = Config.fromfile(store['config'])
    assert cfg.data_preprocessor.to_rgb
    cfg.data_preprocessor.to_rgb = False
    cfg.dump(str(tmp_path / 'bgr.py'))
    with pytest.raises(TeacherCacheError, match="another preprocess: .*'to_rgb': True.* there, .*'to_rgb': False"):
        distillers(str(tmp_path / 'bgr.py'), store['store'], {'kd': LOSSES['KD']})


def test_a_pipeline_of_other_parameters_is_refused_before_training_even_when_its_views_are_in_the_store(
        store, tmp_path, cifar10_root, teacher_checkpoint):
    """A padding of 3 draws crop offsets 0..6, all of which a store made with padding 4 holds, but of other pixels
    (each offset shifted by one): kdplug.TeacherDataCheckHook compares the pipelines before the first step and names
    the transform; a run on a subset of one image more is refused there too."""
    from mmengine.config import Config
    from runner_helpers import make_runner, run_config

    from kdplug.teachers.cache_store import TeacherCacheError
    made = Config.fromfile(store['config'])
    cfg = run_config(cifar10_root, tmp_path / 'run', teacher_checkpoint, max_iters=1)
    cfg.model.teacher = dict(type='CachedTeacher', store=store['store'], model=made.model.teacher.model,
                             checkpoint=made.model.teacher.checkpoint)
    cfg.train_dataloader.dataset.update(indices=IMAGES, pipeline=copy.deepcopy(REPLAY_PIPELINE))
    cfg.train_dataloader.dataset.pipeline[1]['padding'] = 3
    with pytest.raises(TeacherCacheError, match=r"another training pipeline: transform 1 is .*'padding': 3.*"
                                                r"'padding': 4.* in the store"):
        make_runner(cfg).train()
    cfg.train_dataloader.dataset.pipeline[1]['padding'] = 4
    cfg.train_dataloader.dataset.indices = IMAGES + 1
    with pytest.raises(TeacherCacheError, match=f'another dataset: indices {IMAGES + 1} here, {IMAGES} in the store'):
        make_runner(cfg).train()


def test_a_cached_teacher_not_shown_the_training_data_refuses_to_serve(store):
    """Without kdplug.TeacherDataCheckHook (a runtime of one's own) the store was never compared with the run's
    pipeline: the first step stops and says which hook to add."""
    from mmengine.config import Config

    from kdplug.teachers.cache_store import TeacherCacheError
    cfg, online, cached = distillers(store['config'], store['store'], {'kd': LOSSES['KD']})
    cached.teacher.data_checked = False
    data = cached.data_preprocessor(next(batches(Config.fromfile(store['config']), steps=1, seed=0)), training=True)
    with pytest.raises(TeacherCacheError, match=r"not been shown the run's training data.*TeacherDataCheckHook"):
        cached.loss(data['inputs'], data['data_samples'])


def test_a_view_of_another_pipeline_stops_the_step_that_meets_it(store, tmp_path, cifar10_root, teacher_checkpoint):
    """The step's own check, behind the one before training: a view the store does not hold is an error."""
    from kdplug.teachers.cache_store import TeacherCacheError
    other = copy.deepcopy(REPLAY_PIPELINE)
    other[1]['padding'] = 6  # offsets up to 12: views the store never scored
    cfg_path = config(tmp_path, cifar10_root, teacher_checkpoint, other)
    cfg, online, cached = distillers(cfg_path, store['store'], {'kd': LOSSES['KD']}, check_data=False)
    with pytest.raises(TeacherCacheError, match='no view .*another pipeline'):
        for batch in batches(cfg, steps=4, seed=0):
            data = cached.data_preprocessor(batch, training=True)
            cached.loss(data['inputs'], data['data_samples'])


def test_a_killed_job_resumes_where_it_stopped(store, tmp_path, capsys):
    import shutil

    from kdplug.tools.cache_teacher import main
    copy_ = tmp_path / 'store'
    shutil.copytree(store['store'], copy_)
    done = np.load(copy_ / 'done.npy', mmap_mode='r+')
    done[5:] = 0
    done.flush()
    header = json.loads((copy_ / 'header.json').read_text())
    (copy_ / 'header.json').write_text(json.dumps(dict(header, complete=False)))
    before = np.load(copy_ / 'logits.npy').copy()
    main([store['config'], '--out', str(copy_), '--device', 'cpu'])
    assert f'{IMAGES - 5} images to score (5 already done)' in capsys.readouterr().out
    assert np.array_equal(np.load(copy_ / 'logits.npy'), before)
    assert json.loads((copy_ / 'header.json').read_text())['complete']


def test_a_pipeline_without_replayable_views_is_refused_with_the_fix(tmp_path, cifar10_root, teacher_checkpoint):
    from kdplug.tools.cache_teacher import main
    plain = [dict(type='kdplug.CachedLoadImageFromFile'), dict(type='RandomCrop', crop_size=32, padding=4),
             dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
    with pytest.raises(SystemExit, match=r"\['RandomCrop', 'RandomFlip'\].*kdplug.ReplayRandomCrop"):
        main([config(tmp_path, cifar10_root, teacher_checkpoint, plain), '--out', str(tmp_path / 's')])


def test_a_config_no_store_can_serve_is_refused_before_anything_is_scored(tmp_path, cifar10_root,
                                                                          teacher_checkpoint):
    """letKD learns from the teacher's features: the tool stops before scoring an image (no store is written, no
    hours spent on a store no student of the config could read), and a detector's RoIs, which the student picks at
    each step, are refused by the cached teacher at build."""
    from mmengine.config import Config

    from kdplug.tasks.detection import TwoStageDetectionTask
    from kdplug.teachers.cache_store import TeacherCacheError
    from kdplug.teachers.cached import CachedTeacher
    from kdplug.tools.cache_teacher import main
    cfg = Config.fromfile(str(REPO / 'configs' / 'letkd' / 'letkd-2_resnet20_resnet8_4e_cifar10-10k.py'))
    cfg.model.teacher.checkpoint = teacher_checkpoint
    cfg.train_dataloader.dataset.update(data_root=str(cifar10_root), ann_file='', indices=IMAGES)
    cfg.dump(str(tmp_path / 'letkd.py'))
    refused = r"letkd.py cannot train from a teacher cache: the losses \['letkd_.*teacher network's features"
    with pytest.raises(SystemExit, match=refused + r".*CheckpointTeacher"):
        main([str(tmp_path / 'letkd.py'), '--out', str(tmp_path / 'store'), '--device', 'cpu'])
    # before the teacher is read: it asked for a trained teacher first, then refused the config
    with pytest.raises(SystemExit, match=refused):
        main([str(tmp_path / 'letkd.py'), '--out', str(tmp_path / 'store'), '--device', 'cpu', '--cfg-options',
              f'model.teacher.checkpoint={tmp_path / "not_trained_yet.pth"}'])
    assert not (tmp_path / 'store').exists()
    # the teacher's own config (no model.teacher): the registry said ImageClassifier is not in kdplug's
    with pytest.raises(SystemExit, match=r'resnet20_4e_cifar10-10k.py is not a distillation config \(its model has no '
                                         r'teacher\)'):
        main([str(REPO / 'configs' / 'demo' / 'teacher_resnet20_4e_cifar10-10k.py'), '--device', 'cpu'])
    with pytest.raises(TeacherCacheError, match=r"TwoStageDetectionTask distils rows that the student picks.*RoIs"):
        CachedTeacher(store=str(tmp_path / 'store'), model={}, checkpoint='teacher.pth').setup(
            TwoStageDetectionTask(), torch.nn.Linear(1, 1), torch.nn.Identity())


def test_a_run_on_another_split_or_subset_is_refused_before_training_and_at_its_first_image(store, tmp_path):
    """The test split's files have the train split's names (test/cat/0000.jpg, train/cat/0000.jpg) and a shifted
    subset as many images: the dataset settings are compared before training, naming the one that differs (a store
    moved with its data to another data_root still serves); without that check the step meets another image."""
    from mmengine.config import Config

    from kdplug.teachers.cache_store import TeacherCacheError
    cfg = Config.fromfile(store['config'])
    moved = copy.deepcopy(cfg)
    moved.train_dataloader.dataset.data_root = str(tmp_path / 'elsewhere')
    moved.dump(str(tmp_path / 'moved.py'))
    _, _, cached = distillers(str(tmp_path / 'moved.py'), store['store'], {'kd': LOSSES['KD']})
    with pytest.raises(TeacherCacheError, match=f'holds {IMAGES} images, this run trains on {IMAGES + 1}'):
        cached.teacher.check_data(moved.train_dataloader.dataset, IMAGES + 1)  # a file added to the folder since
    cfg.train_dataloader.dataset.data_prefix = 'test'
    cfg.dump(str(tmp_path / 'test_split.py'))
    with pytest.raises(TeacherCacheError, match="another dataset: data_prefix 'test' here, 'train' in the store"):
        distillers(str(tmp_path / 'test_split.py'), store['store'], {'kd': LOSSES['KD']})
    cfg.train_dataloader.dataset.data_prefix = 'train'
    cfg.train_dataloader.dataset.indices = list(range(1, IMAGES + 1))  # as many images, shifted by one
    cfg.dump(str(tmp_path / 'shifted.py'))
    with pytest.raises(TeacherCacheError, match=r'another dataset: indices \[1, 2, .*\] here, 12 in the store'):
        distillers(str(tmp_path / 'shifted.py'), store['store'], {'kd': LOSSES['KD']})
    cfg, online, cached = distillers(str(tmp_path / 'shifted.py'), store['store'], {'kd': LOSSES['KD']},
                                     check_data=False)
    batch = next(batches(cfg, steps=1, seed=0))
    data = cached.data_preprocessor(batch, training=True)
    with pytest.raises(TeacherCacheError, match='another dataset'):
        cached.loss(data['inputs'], data['data_samples'])


def test_the_demo_s_cached_config_trains_from_the_store_it_names(tmp_path, cifar10_root, teacher_checkpoint, capsys):
    """configs/demo/kd-cached_*: tools/cache_teacher.py CONFIG writes the store the config's CachedTeacher reads,
    then tools/train.py CONFIG trains without a teacher network: finite KD losses, no teacher in the checkpoint."""
    from runner_helpers import make_runner, run_config, scalars

    from kdplug.tools.cache_teacher import main
    config = REPO / 'configs' / 'demo' / 'kd-cached_resnet20_resnet8_4e_cifar10-10k.py'
    cfg = run_config(cifar10_root, tmp_path / 'run', config=config, max_iters=2)
    cfg.model.teacher.update(checkpoint=teacher_checkpoint, store=str(tmp_path / 'store'))
    cfg.train_dataloader.dataset.indices = IMAGES
    cfg.dump(str(tmp_path / 'cached.py'))
    main([str(tmp_path / 'cached.py'), '--device', 'cpu'])  # --out: the config's store
    assert f'train from it: python tools/train.py {tmp_path / "cached.py"}\n' in capsys.readouterr().out
    runner = make_runner(cfg)
    runner.train()
    logged = [entry for entry in scalars(tmp_path / 'run') if 'distill.loss_kd' in entry]
    assert len(logged) == 2 and all(np.isfinite(entry['distill.loss_kd']) for entry in logged)
    assert runner.model.teacher_model is None
    assert not any(key.startswith('teacher') for key in runner.model.state_dict())


def epochs_config(tmp_path, cifar10_root, teacher_checkpoint, seed: int, workers: int):
    """The demo's cached config on IMAGES images, 2 seeded epochs of batches of 4 with RandomResizedCrop (which views
    mode cannot list), its store at tmp_path / 'store'; dumped to tmp_path / 'cached.py'."""
    from runner_helpers import run_config
    cfg = run_config(cifar10_root, tmp_path / 'run', config=REPO / 'configs' / 'demo' /
                     'kd-cached_resnet20_resnet8_4e_cifar10-10k.py')
    cfg.train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=2)
    cfg.randomness = dict(seed=seed)
    cfg.model.teacher.update(checkpoint=teacher_checkpoint, store=str(tmp_path / 'store'))
    cfg.train_dataloader.update(batch_size=4, num_workers=workers, persistent_workers=workers > 0)
    cfg.train_dataloader.dataset.update(indices=IMAGES, pipeline=[
        dict(type='kdplug.CachedLoadImageFromFile'), dict(type='kdplug.ReplayRandomResizedCrop', scale=32),
        dict(type='kdplug.ReplayRandomFlip', prob=0.5),
        dict(type='PackInputs', meta_keys=('sample_idx', 'img_path', 'view'))])
    cfg.dump(str(tmp_path / 'cached.py'))
    return cfg


@pytest.mark.parametrize('workers', [0, 2], ids=['main-process', 'two-persistent-workers'])
def test_epochs_mode_serves_a_seeded_run_of_the_same_config_through_the_runner(tmp_path, cifar10_root,
                                                                               teacher_checkpoint, workers):
    """--mode epochs scores the views that the run's own dataloader draws with the config's seed (here with
    RandomResizedCrop, which views mode cannot list): a Runner training 2 epochs with that seed finds every view in
    the store, and the cached teacher's logits are the online teacher's (float16) at every step."""
    from runner_helpers import build_classifier, make_runner

    from kdplug.tasks.classification import ClassificationTask
    from kdplug.tools.cache_teacher import main
    cfg = epochs_config(tmp_path, cifar10_root, teacher_checkpoint, seed=7, workers=workers)
    main([str(tmp_path / 'cached.py'), '--mode', 'epochs', '--device', 'cpu'])

    online = build_classifier(cfg.model.teacher.model)
    online.load_state_dict(torch.load(teacher_checkpoint, weights_only=True)['state_dict'])
    online.eval()
    runner = make_runner(cfg)
    teach, served = runner.model.teacher.teach, []

    def checked(task, inputs, data_samples, student, positions=(), with_logits=True):
        cached, feats = teach(task, inputs, data_samples, student, positions, with_logits)
        with torch.no_grad():
            exact = ClassificationTask.logits(online, inputs)
        assert torch.all((cached[0] - exact).abs() <= 2 ** -11 * exact.abs() + 1e-6)
        served.append(len(data_samples))
        return cached, feats
    runner.model.teacher.teach = checked
    runner.train()
    assert sum(served) == 2 * IMAGES  # every image of both epochs found its view


def test_an_epochs_store_refuses_another_seed_or_more_epochs_before_the_first_step(tmp_path, cifar10_root,
                                                                                  teacher_checkpoint):
    """A run of another seed met a view the store does not hold at its first step, a run of more epochs trained
    those the store holds and stopped at the first one past them; each message listed five possible causes."""
    from runner_helpers import make_runner

    from kdplug.teachers.cache_store import TeacherCacheError
    from kdplug.tools.cache_teacher import main
    cfg = epochs_config(tmp_path, cifar10_root, teacher_checkpoint, seed=7, workers=0)
    main([str(tmp_path / 'cached.py'), '--mode', 'epochs', '--device', 'cpu'])
    other_seed = copy.deepcopy(cfg)
    other_seed.randomness = dict(seed=8)
    with pytest.raises(TeacherCacheError, match=r"holds the views of a run seeded with 7 \(epochs mode\); this run's "
                                                r'seed is 8: train with randomness.seed=7'):
        make_runner(other_seed).train()
    longer = copy.deepcopy(cfg)
    longer.train_cfg.max_epochs = 3
    with pytest.raises(TeacherCacheError, match=r'holds the views of 2 epoch\(s\) \(epochs mode\); this run trains 3: '
                                                r'train with train_cfg.max_epochs=2'):
        make_runner(longer).train()


def test_epochs_mode_counts_the_images_a_padded_epoch_draws_twice():
    """mmengine's DefaultSampler pads each epoch to a multiple of the world size with images already drawn: such an
    image needs a second slot in that epoch; one process, or no padding, needs one."""
    from kdplug.tools.cache_teacher import epoch_occurrences
    sampler = dict(sampler=dict(type='DefaultSampler', shuffle=True))
    assert epoch_occurrences(sampler, 80, 1) == 1 and epoch_occurrences(sampler, 80, 2) == 1
    assert epoch_occurrences(sampler, 79, 2) == 2 and epoch_occurrences(sampler, 3, 4) == 2
    assert epoch_occurrences(dict(sampler=dict(type='DefaultSampler', round_up=False)), 79, 2) == 1
    with pytest.raises(SystemExit, match='DefaultSampler'):
        epoch_occurrences(dict(sampler=dict(type='InfiniteSampler')), 79, 2)


def shipped_checkpoint_teacher_configs():
    """Every shipped config that distils from a CheckpointTeacher, as {name: Config}."""
    from mmengine.config import Config
    configs = {}
    for path in sorted((REPO / 'configs').rglob('*.py')):
        if '_base_' in path.parts:
            continue
        cfg = Config.fromfile(str(path))
        teacher = cfg.model.get('teacher') or {}
        if str(teacher.get('type', '')).split('.')[-1] == 'CheckpointTeacher':
            configs[path.relative_to(REPO / 'configs').as_posix()] = cfg
    return configs


def cache_refusal(cfg) -> str:
    """Why no store can serve the config's distillation (its task and losses), '' when one can."""
    from kdplug.distillers.distiller import is_module_loss
    from kdplug.registry import MODELS, TASKS
    from kdplug.teachers.cache_store import TeacherCacheError
    from kdplug.teachers.cached import check_cacheable
    task = cfg.model.task
    losses = {name: MODELS.build(copy.deepcopy(loss)) for name, loss in cfg.model.losses.items()}
    try:
        check_cacheable(TASKS.build(dict(type=task) if isinstance(task, str) else copy.deepcopy(task)),
                        [name for name, loss in losses.items() if is_module_loss(loss)])
    except TeacherCacheError as err:
        return str(err)
    return ''


def test_every_shipped_config_with_a_checkpoint_teacher_can_be_cached_as_it_is_or_says_why_not():
    """The dataset bases record each image's view: the cache tool accepts every shipped classification config whose
    losses read logits and whose training pipeline has no MultiView (MLKD's two augmentations, refused with the
    reason): CIFAR and Tiny-ImageNet in views mode, ImageNet (a continuous RandomResizedCrop, refused in views mode
    with the fix) in epochs mode. Detection (RoIs the student picks) and letKD (the teacher's features) are refused
    for what they distil, before any pipeline is looked at."""
    from mmengine.registry import TRANSFORMS, init_default_scope

    from kdplug.tools.cache_teacher import replayable_split
    require_detection_stack()  # the detection configs are among them: their _base_ is mmdet's
    init_default_scope('mmpretrain')
    configs = shipped_checkpoint_teacher_configs()
    modes, refused = {}, {}
    for name, cfg in configs.items():
        reason = cache_refusal(cfg)
        if reason:
            assert ('RoIs' in reason if name.startswith('detection/') else 'features' in reason) and \
                'CheckpointTeacher' in reason, (name, reason)
            assert name.startswith('detection/') or 'letkd' in name, (name, reason)
            continue
        transforms = [TRANSFORMS.build(copy.deepcopy(t)) for t in cfg.train_dataloader.dataset.pipeline]
        for mode in ('views', 'epochs'):
            try:
                replayable_split(transforms, mode)
                modes[name] = mode
                break
            except ValueError as err:
                refused[name] = str(err)
        if name in modes and modes[name] == 'epochs':
            assert '--mode views cannot list its views' in refused.pop(name), name
    views = [name for name, mode in modes.items() if mode == 'views']
    epochs = [name for name, mode in modes.items() if mode == 'epochs']
    assert len(views) >= 85 and all('cifar' in name or 'tiny-imagenet' in name for name in views)
    assert len(epochs) >= 6 and all(name.endswith('in1k.py') for name in epochs)
    assert refused and all('MultiView' in [t['type'] for t in configs[name].train_dataloader.dataset.pipeline]
                           for name in refused)
    assert all('several augmented views (MultiView)' in reason and 'online teacher' in reason
               for reason in refused.values())
    not_served = set(configs) - set(modes) - set(refused)
    assert {name for name in not_served if name.startswith('detection/')} and \
        {name for name in not_served if name.startswith('letkd/')}
    print(f'{len(views)} views mode, {len(epochs)} epochs mode, {len(refused)} MultiView, {len(not_served)} '
          'detection or letKD')


@pytest.fixture
def array_dataset():
    """CIFAR-10's test images held as arrays, as mmpretrain's CIFAR10 / CIFAR100 hold theirs: no image files."""
    import mmcv
    from mmpretrain.datasets import BaseDataset
    from mmpretrain.registry import DATASETS

    from cifar10_data import CLASSES

    class ArrayImages(BaseDataset):
        METAINFO = {'classes': CLASSES}

        def __init__(self, data_root: str, split: str = 'train', **kwargs) -> None:
            self.split = split
            super().__init__(ann_file='', data_root=data_root, **kwargs)

        def load_data_list(self):
            root = Path(self.data_root) / self.split
            return [dict(img=mmcv.imread(str(path), channel_order='rgb'), gt_label=label)
                    for label, name in enumerate(CLASSES) for path in sorted((root / name).glob('*.jpg'))]

    DATASETS.register_module(name='ArrayImagesForTests', module=ArrayImages, force=True)
    yield 'ArrayImagesForTests'
    DATASETS._module_dict.pop('ArrayImagesForTests', None)


def test_a_shipped_cifar100_config_caches_and_trains_from_the_store_with_the_printed_options(
        tmp_path, cifar10_root, array_dataset, capsys):
    """configs/kd/kd_resnet56_resnet20_240e_cifar100.py, as shipped but for its data (arrays, as mmpretrain's
    CIFAR100 holds them, here of CIFAR-10 images) and a saved resnet56: the cache tool writes a store of every view
    and prints the command line that trains the same config from it; that run takes no teacher forward. The store
    records its dataset, so the same run on the test split is refused before training, naming the split."""
    import shlex

    from runner_helpers import make_runner, run_config, save_teacher, scalars

    from kdplug.teachers.cache_store import TeacherCacheError
    from kdplug.tools.cache_teacher import main
    from kdplug.tools.train import parse_args
    checkpoint = save_teacher(tmp_path / 'resnet56.pth', backbone='ResNet56', num_classes=100)
    cfg = run_config(cifar10_root, tmp_path / 'run', checkpoint, REPO / 'configs' / 'kd' /
                     'kd_resnet56_resnet20_240e_cifar100.py', max_iters=2)
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'test'), ('test_dataloader', 'test')):
        cfg[loader].dataset.update(type=array_dataset, split=split)
    cfg.train_dataloader.dataset.indices = [0, 8, 16, 24]  # 8 training images per class: one of each of four
    cfg.dump(str(tmp_path / 'kd_cifar100.py'))
    main([str(tmp_path / 'kd_cifar100.py'), '--out', str(tmp_path / 'store'), '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert f'{4 * 162} views scored' in printed
    command = shlex.split(printed.split('train from it: ')[1].splitlines()[0])
    assert command[:2] == ['python', 'tools/train.py']
    args = parse_args(command[2:])  # what tools/train.py makes of it
    assert args.config == str(tmp_path / 'kd_cifar100.py')
    cfg.merge_from_dict(args.cfg_options)
    assert cfg.model.teacher.type == 'CachedTeacher' and cfg.model.teacher.checkpoint == checkpoint

    runner = make_runner(cfg)
    runner.train()
    logged = [entry['distill.loss_kd'] for entry in scalars(tmp_path / 'run') if 'distill.loss_kd' in entry]
    assert len(logged) == 2 and np.isfinite(logged).all() and runner.model.teacher_model is None

    cfg.train_dataloader.dataset.split = 'test'  # 4 per class: as many images, views found, other labels
    cfg.work_dir = str(tmp_path / 'other_split')
    with pytest.raises(TeacherCacheError, match="another dataset: split 'test' here, 'train' in the store"):
        make_runner(cfg).train()


def test_the_printed_train_command_carries_the_job_s_options_and_seed_through_tools_train():
    """What tools/train.py parses from the printed line: the cache job's --cfg-options, its epochs-mode --seed and
    the teacher turned into a CachedTeacher of the store."""
    import shlex
    from types import SimpleNamespace

    from kdplug.tools.cache_teacher import Setup, parse_args
    from kdplug.tools.train import parse_args as train_args
    args = parse_args(['my cfg.py', '--mode', 'epochs', '--seed', '3', '--epochs', '2', '--cfg-options',
                       'train_dataloader.batch_size=32', 'model.teacher.checkpoint=runs/t.pth'])
    command = Setup.train_command(SimpleNamespace(reads_store=False, out='work_dirs/store'), args)
    parsed = train_args(shlex.split(command)[2:])
    assert parsed.config == 'my cfg.py'
    # --epochs 2 of a 30-epoch config: the run trained 30 and stopped after the second
    assert parsed.cfg_options == {'train_dataloader.batch_size': 32, 'model.teacher.checkpoint': 'runs/t.pth',
                                  'randomness.seed': 3, 'train_cfg.max_epochs': 2,
                                  'model.teacher.type': 'CachedTeacher', 'model.teacher.store': 'work_dirs/store'}
    reads = Setup.train_command(SimpleNamespace(reads_store=True, out='x', config_store='x'), parse_args(['cached.py']))
    assert reads == 'python tools/train.py cached.py'
    # a CachedTeacher config whose store went elsewhere (--out): the line read the config's own store
    elsewhere = Setup.train_command(SimpleNamespace(reads_store=True, out='mine', config_store='x'),
                                    parse_args(['cached.py']))
    assert elsewhere == 'python tools/train.py cached.py --cfg-options model.teacher.store=mine'
    # an epochs-mode store of two processes serves a run of two: the single-process line was refused
    two = Setup.train_command(SimpleNamespace(reads_store=True, out='x', config_store='x'),
                              parse_args(['cached.py', '--mode', 'epochs']), world_size=2)
    assert two == 'bash tools/dist_train.sh cached.py 2'


def test_labels_on_an_accelerator_are_read_at_the_first_step_and_every_interval_on_the_cpu_every_step():
    """Reading labels off a device waits for it: the cached teacher reads them at step 1, 1 + 50, ... there (a wrong
    dataset has wrong labels in nearly every batch), at every step on the CPU; without labels, never."""
    from mmpretrain.structures import DataSample

    from kdplug.teachers.cached import CachedTeacher
    teacher = CachedTeacher(store='unused', model={}, checkpoint='unused')
    interval = CachedTeacher.LABEL_CHECK_INTERVAL
    on_device = [DataSample().set_gt_label(torch.tensor([3], device='meta'))]
    on_cpu = [DataSample().set_gt_label(3)]
    read = {'device': [], 'cpu': [], 'none': []}
    for teacher.steps in range(1, 2 * interval + 2):
        read['device'].append(teacher.reads_labels(on_device))
        read['cpu'].append(teacher.reads_labels(on_cpu))
        read['none'].append(teacher.reads_labels([DataSample()]))
    assert [step for step, yes in enumerate(read['device'], 1) if yes] == [1, interval + 1, 2 * interval + 1]
    assert all(read['cpu']) and not any(read['none'])


def test_an_epochs_mode_job_killed_after_its_first_epoch_resumes_to_the_store_an_uninterrupted_job_writes(
        tmp_path, cifar10_root, teacher_checkpoint, capsys):
    """Epochs mode resumes at the first epoch not done, and still draws the done ones (the generators must reach
    the epoch where they were): the resumed store is, bit for bit, the uninterrupted one, views and logits."""
    import shutil

    from kdplug.tools.cache_teacher import main
    epochs_config(tmp_path, cifar10_root, teacher_checkpoint, seed=3, workers=0)
    main([str(tmp_path / 'cached.py'), '--mode', 'epochs', '--device', 'cpu'])
    shutil.copytree(tmp_path / 'store', tmp_path / 'killed')
    killed = tmp_path / 'killed'
    slots = 2  # one per epoch: one process, no padding
    for name in ('logits.npy', 'params.npy'):  # epoch 2 (slot 1 of every image) never written
        array = np.load(killed / name, mmap_mode='r+')
        array.reshape(IMAGES, slots, -1)[:, 1] = 0
        array.flush()
    done = np.load(killed / 'done.npy', mmap_mode='r+')
    done[1] = 0
    done.flush()
    header = json.loads((killed / 'header.json').read_text())
    (killed / 'header.json').write_text(json.dumps(dict(header, complete=False)))
    capsys.readouterr()
    main([str(tmp_path / 'cached.py'), '--mode', 'epochs', '--device', 'cpu', '--out', str(killed)])
    assert '1 epochs to score (1 already done)' in capsys.readouterr().out
    for name in ('logits.npy', 'params.npy', 'done.npy'):
        assert np.array_equal(np.load(killed / name), np.load(tmp_path / 'store' / name)), name
    assert json.loads((killed / 'header.json').read_text())['complete']
