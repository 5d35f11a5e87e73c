"""kdplug.Distiller with ClassificationTask and a CheckpointTeacher (an mmpretrain student distilled from a frozen
teacher) through an mmengine Runner, on real CIFAR-10 images."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict

from conftest import REPO

from runner_helpers import build_classifier, classifier_cfg, distiller_cfg, make_runner, run_config, save_teacher, \
    scalars


def test_distillation_steps_log_both_losses_and_leave_the_teacher_untouched(cifar10_root, tmp_path, teacher_checkpoint):
    runner = make_runner(run_config(cifar10_root, tmp_path, teacher_checkpoint))
    teacher = runner.model.teacher_model
    assert teacher is not None and teacher is runner.model.teacher.model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in runner.model.student.state_dict().items()}
    runner.train()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), 'teacher weights or BN statistics moved'
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith('teacher') for k in runner.model.state_dict())
    moved = [k for k, v in runner.model.student.state_dict().items() if not torch.equal(student_before[k], v)]
    assert moved, 'the student did not train'
    records = scalars(tmp_path)
    train = [r for r in records if 'distill.loss_kd' in r]
    assert len(train) == 3
    assert all(torch.isfinite(torch.tensor([r['student.loss'], r['distill.loss_kd'], r['loss']])).all()
               for r in train)
    assert all(abs(r['loss'] - r['student.loss'] - r['distill.loss_kd']) < 1e-3 for r in train)
    # the teacher's metrics beside the student's in the validation record, no record of their own: mmpretrain's
    # analyze_logs takes the first record without lr for the validation keys, and refused accuracy/top1
    from mmpretrain.utils import load_json_log
    validation = load_json_log(str(sorted(tmp_path.glob('*/vis_data/scalars.json'))[-1]))['val']
    assert len(validation) == 1 and {'accuracy/top1', 'teacher/accuracy/top1'} <= set(validation[0])


def test_teacher_is_outside_the_optimizer_and_stays_in_eval_mode(cifar10_root, tmp_path, teacher_checkpoint):
    runner = make_runner(run_config(cifar10_root, tmp_path, teacher_checkpoint))
    model = runner.model
    model.train()
    teacher = model.teacher_model
    assert model.student.training and not teacher.training
    assert not any(module.training for module in teacher.modules())
    teacher_params = {id(p) for p in teacher.parameters()}
    assert teacher_params and not teacher_params & {id(p) for p in model.parameters()}
    assert not any(module is teacher for module in model.modules()), 'the teacher network is in the module tree'
    assert not any(key.startswith('teacher') for key in model.state_dict())


def test_export_loads_in_plain_mmpretrain(cifar10_root, tmp_path, teacher_checkpoint):
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS
    from mmengine.registry import DefaultScope
    from kdplug.distillers.export import export_student
    cfg = run_config(cifar10_root, tmp_path, teacher_checkpoint, max_iters=2)
    runner = make_runner(cfg)
    runner.train()
    exported = tmp_path / 'student.pth'
    export_student(str(tmp_path / 'iter_2.pth'), str(exported))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        plain = MODELS.build(copy.deepcopy(cfg.model.student))
    load_checkpoint(plain, str(exported), map_location='cpu', strict=True)  # torch's weights_only=True default
    plain.eval()
    runner.model.eval()
    inputs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain(inputs), runner.model(inputs))


def test_export_writes_the_students_own_config_for_mmpretrains_inferencer(cifar10_root, tmp_path, teacher_checkpoint):
    """student.pth comes with student.py: mmpretrain's ImageClassificationInferencer (no kdplug tool) given the two
    predicts what the run's student predicts, normalisation included (the run's mean / std sit in the config's
    top-level data_preprocessor); the teacher's hooks are left out, the others kept."""
    from mmengine.config import Config
    from mmpretrain.apis import ImageClassificationInferencer
    from kdplug.distillers.export import export_student
    runner = make_runner(run_config(cifar10_root, tmp_path, teacher_checkpoint, max_iters=2))
    runner.train()
    export_student(str(tmp_path / 'iter_2.pth'), str(tmp_path / 'out' / 'student.pth'), str(tmp_path / 'out' / 's.py'))
    own = Config.fromfile(str(tmp_path / 'out' / 's.py'))
    assert own.default_scope == 'mmpretrain' and own.model.type == 'ImageClassifier'
    assert own.model.data_preprocessor.mean == list(runner.cfg.data_preprocessor.mean)
    assert not own.resume and own.load_from is None and 'work_dir' not in own  # the run's state, not the student's
    hooks = [hook.type for hook in own.custom_hooks] + [hook.type for hook in own.default_hooks.values()]
    assert 'kdplug.TeacherEvalHook' not in hooks and 'kdplug.TeacherDataCheckHook' not in hooks
    assert 'kdplug.AtomicCheckpointHook' in hooks
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    inferencer = ImageClassificationInferencer(str(tmp_path / 'out' / 's.py'), str(tmp_path / 'out' / 'student.pth'),
                                               device='cpu')
    scores = inferencer(image)[0]['pred_scores']
    runner.model.eval()
    with torch.no_grad():
        expected = runner.model.test_step(next(inferencer.preprocess([image])))[0].pred_score
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_the_students_own_config_of_a_two_view_run_infers_with_mmpretrains_preprocessor():
    """An MLKD run (MultiView pipeline) trains through SelfSupDataPreprocessor, which mmpretrain's classifier built
    for inference refused (batch_augments) in the exported student.py: the student's own config infers with
    ClsDataPreprocessor and the run's normalisation, at the top level too."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    from kdplug.distillers.export import student_config
    cfg = Config.fromfile(str(REPO / 'configs' / 'mlkd' / 'mlkd_resnet56_resnet20_30e_cifar10.py'))
    assert cfg.data_preprocessor.type.endswith('SelfSupDataPreprocessor')
    own = student_config(cfg)
    for preprocessor in (own.model.data_preprocessor, own.data_preprocessor):
        assert preprocessor.type == 'mmpretrain.ClsDataPreprocessor' and 'batch_augments' not in preprocessor
        assert (preprocessor.mean, preprocessor.std) == (list(cfg.data_preprocessor.mean),
                                                          list(cfg.data_preprocessor.std))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(own.model)
    image = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[DataSample()]))
    assert data['inputs'].shape == (1, 3, 32, 32)
    expected = (128 - torch.tensor(cfg.data_preprocessor.mean)) / torch.tensor(cfg.data_preprocessor.std)
    torch.testing.assert_close(data['inputs'][0, :, 0, 0], expected)  # a grey image: the channel order is moot


def test_resume_continues_at_the_same_iteration_with_the_same_state(cifar10_root, tmp_path, teacher_checkpoint):
    def config(work_dir, **overrides):
        cfg = run_config(cifar10_root, work_dir, teacher_checkpoint, max_iters=4, **overrides)
        cfg.train_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline  # no random augmentation
        return cfg

    straight = make_runner(config(tmp_path / 'straight'))
    straight.train()
    # a run stopped after iteration 2 (its checkpoint written), then resumed by a new Runner
    first = make_runner(config(tmp_path / 'killed'))
    first.train_loop._max_iters = 2
    first.train()
    # its own work dir: mmengine names log dirs by the second, and the two runners may start within one
    checkpoint = str(tmp_path / 'killed' / 'iter_2.pth')
    resumed = make_runner(config(tmp_path / 'resumed', resume=True, load_from=checkpoint))
    resumed.train()
    assert resumed.iter == 4
    assert [r['iter'] for r in scalars(tmp_path / 'resumed') if 'distill.loss_kd' in r] == [3, 4]
    expected, got = straight.model.student.state_dict(), resumed.model.student.state_dict()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=f'{key} differs after resume')


def test_missing_checkpoint_names_the_file_and_the_fix(tmp_path):
    from kdplug.registry import MODELS
    cfg = distiller_cfg(str(tmp_path / 'nope.pth'))
    with pytest.raises(FileNotFoundError, match=r"nope.pth' does not exist. Train the teacher first"):
        MODELS.build(cfg)
    with pytest.raises(FileNotFoundError, match=r"'work_dirs/nope.pth' \(relative to the working directory "
                                                r".*\) does not exist"):
        MODELS.build(distiller_cfg('work_dirs/nope.pth'))
    with pytest.raises(ValueError, match="the teacher's checkpoint is missing"):
        MODELS.build(distiller_cfg(None))


def test_checkpoint_that_does_not_fit_the_teacher_config(tmp_path):
    from kdplug.registry import MODELS
    wrong = save_teacher(tmp_path / 'resnet8.pth', backbone='ResNet8')
    cfg = distiller_cfg(wrong)
    with pytest.raises(RuntimeError, match='does not fit the teacher config: missing keys: backbone'):
        MODELS.build(cfg)


def test_class_count_mismatch_is_an_error(tmp_path):
    from kdplug.registry import MODELS
    ckpt = save_teacher(tmp_path / 'teacher100.pth', num_classes=100)
    cfg = distiller_cfg(ckpt, teacher=classifier_cfg('ResNet20', 100))
    with pytest.raises(ValueError, match='the teacher predicts 100 classes and the student 10'):
        MODELS.build(cfg)


def test_student_from_cfg_path_keeps_its_batch_augments(tmp_path):
    """A student given by cfg_path brings its model.train_cfg (mixup / cutmix) into the distiller's preprocessor."""
    from kdplug.registry import MODELS
    student = dict(cfg_path='mmpretrain::resnet/resnet50_8xb256-rsb-a1-600e_in1k.py', backbone=dict(depth=18),
                   head=dict(in_channels=512))
    ckpt = tmp_path / 'teacher.pth'
    torch.save(build_classifier(student).state_dict(), ckpt)
    model = MODELS.build(distiller_cfg(str(ckpt), student=student, teacher=student))
    augments = model.data_preprocessor.batch_augments
    assert augments is not None and sorted(type(a).__name__ for a in augments.augments) == ['CutMix', 'Mixup']


def test_untrusted_pickle_is_refused(tmp_path):
    from kdplug.registry import MODELS
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': Path('/')}, path)  # an arbitrary object: not weights
    cfg = distiller_cfg(str(path))
    with pytest.raises(RuntimeError, match='refused by the weights-only loader'):
        MODELS.build(cfg)


def test_loss_warmup_hook_ramps_dkd_per_epoch():
    from types import SimpleNamespace
    from kdplug.engine.hooks import LossWarmupHook
    model = SimpleNamespace(loss_scales={'dkd': 1.0, 'kd': 1.0})
    hook = LossWarmupHook(warmup=20, losses=['dkd'])
    for epoch, expected in ((0, 1 / 20), (9, 0.5), (19, 1.0), (30, 1.0)):
        hook.before_train_iter(SimpleNamespace(model=model, epoch=epoch, iter=0), 0)
        assert model.loss_scales == {'dkd': expected, 'kd': 1.0}
    with pytest.raises(KeyError, match='no loss named'):
        LossWarmupHook(warmup=2, losses=['nkd']).before_train_iter(SimpleNamespace(model=model, epoch=0, iter=0), 0)
    LossWarmupHook(warmup=2, losses='dkd').before_train_iter(SimpleNamespace(model=model, epoch=0, iter=0), 0)
    assert model.loss_scales == {'dkd': 0.5, 'kd': 1.0}  # one name, not the losses 'd', 'k' and 'd'


@pytest.mark.parametrize('hook', ['LossWarmupHook', 'CTKDCurriculumHook'])
def test_hooks_counting_epochs_refuse_an_iteration_based_run(hook):
    """In an IterBasedTrainLoop the epoch stays 0: DKD's loss stayed scaled by 1 / warmup, CTKD's lambda at its
    first value, for the whole run."""
    from types import SimpleNamespace

    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    from kdplug.registry import HOOKS, MODELS
    model = SimpleNamespace(loss_scales={'ctkd': 1.0}, losses={'ctkd': MODELS.build(dict(type='CTKDLoss'))})
    options = dict(warmup=2) if hook == 'LossWarmupHook' else {}
    built = HOOKS.build(dict(type=hook, **options))
    iterations = SimpleNamespace(model=model, train_loop=object.__new__(IterBasedTrainLoop), epoch=0, iter=0)
    with pytest.raises(ValueError, match=rf'{hook}\(by_epoch=True\) counts epochs, but this run trains by '
                                         r'iterations \(IterBasedTrainLoop\).*by_epoch=False'):
        built.before_train(iterations)
    HOOKS.build(dict(type=hook, by_epoch=False, **options)).before_train(iterations)
    built.before_train(SimpleNamespace(model=model, train_loop=object.__new__(EpochBasedTrainLoop), epoch=0, iter=0))


@pytest.mark.parametrize('hook,options,error', [
    ('LossWarmupHook', dict(warmup='5'), r"warmup must be a whole number of epochs >= 1, got '5'"),
    ('LossWarmupHook', dict(warmup=2.5), 'warmup must be a whole number of epochs >= 1, got 2.5'),
    ('LossWarmupHook', dict(warmup=float('nan')), 'warmup must be a whole number'),
    ('LossWarmupHook', dict(warmup=float('inf'), by_epoch=False), 'whole number of iterations >= 1, got inf'),
    ('LossWarmupHook', dict(warmup=None), 'warmup must be a whole number'),
    ('LossWarmupHook', dict(warmup=2, by_epoch='False'), "by_epoch must be True or False, got 'False'"),
    ('LossWarmupHook', dict(warmup=2, losses=3), "losses must be a loss's name or a list of names"),
    ('CTKDCurriculumHook', dict(by_epoch='False'), "by_epoch must be True or False, got 'False'"),
    ('TeacherEvalHook', dict(interval='3'), r"interval must be a whole number of batches >= 1, got '3'"),
    ('TeacherEvalHook', dict(interval=0), 'interval must be a whole number of batches >= 1, got 0'),
])
def test_hook_options_of_the_wrong_type_are_named(hook, options, error):
    """Each failed in Python's words ('<' not supported..., cannot convert float NaN to integer), or was rounded
    (2.5 epochs became 2) or read as true (by_epoch='False')."""
    from kdplug.registry import HOOKS
    with pytest.raises((TypeError, ValueError), match=error):
        HOOKS.build(dict(type=hook, **options))


def all_configs():
    # configs/detection: parsed and built by tests/test_detection_distill.py
    return sorted(p for p in (REPO / 'configs').rglob('*.py')
                  if '_base_' not in p.parts and 'detection' not in p.parts)


def real_batch(cifar10_root: Path, size: int, count: int = 4, views: int = 1):
    """``count`` real CIFAR-10 training images of different classes, resized to ``size``, with their labels. With
    ``views`` > 1 (a pipeline with mmpretrain's MultiView) the batch default_collate makes of such a pipeline's
    output: one (N, 3, H, W) tensor per view (the images, then their mirror images)."""
    import numpy as np
    from PIL import Image
    from mmpretrain.structures import DataSample
    class_dirs = sorted((cifar10_root / 'train').iterdir())[:count]
    inputs, samples = [], []
    for label, class_dir in enumerate(class_dirs):
        image = Image.open(sorted(class_dir.iterdir())[0]).convert('RGB').resize((size, size))
        inputs.append(torch.from_numpy(np.asarray(image)[:, :, ::-1].copy()).permute(2, 0, 1))  # BGR, as mmcv reads
        samples.append(DataSample().set_gt_label(label))
    if views > 1:
        inputs = [torch.stack(inputs)] + [torch.stack(inputs).flip(-1)] * (views - 1)
    return dict(inputs=inputs, data_samples=samples)


def pipeline_views(cfg: Config) -> int:
    """Views of each image in a config's training pipeline: those of its MultiView transform, else 1."""
    for transform in cfg.get('train_dataloader', {}).get('dataset', {}).get('pipeline', []):
        if transform.get('type') == 'MultiView':
            views = transform['num_views']
            return views if isinstance(views, int) else sum(views)
    return 1


@pytest.mark.parametrize('config', all_configs(), ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_every_config_builds_predicts_and_takes_a_training_step(config, tmp_path, cifar10_root, one_thread):
    """Every config's model, on real images: eval forward, then one loss + backward that reaches the student.
    (letKD's step needs codewords from tools/fit_codewords.py: tests/test_letkd.py trains it through the Runner.)"""
    from mmengine.registry import DefaultScope, MODELS as ROOT
    cfg = Config.fromfile(str(config))
    model_cfg = copy.deepcopy(cfg.model)
    teacher_source = model_cfg.get('teacher') if model_cfg.get('student') else None
    if teacher_source and str(teacher_source.type).split('.')[-1] == 'CachedTeacher':
        # the store is made from the run's own data: tests/test_teacher_cache.py makes one and trains this config
        model_cfg.teacher = teacher_source = ConfigDict(type='CheckpointTeacher', model=teacher_source.model)
    if teacher_source and str(teacher_source.type).split('.')[-1] == 'CheckpointTeacher':
        teacher = build_classifier(teacher_source.model)
        teacher_source.checkpoint = str(tmp_path / 'teacher.pth')
        torch.save(teacher.state_dict(), teacher_source.checkpoint)
    if cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = ROOT.build(model_cfg)
    size = 64 if 'imagenet' in config.name else 32
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, model_cfg.get('student', model_cfg).get('head', {}).get('num_classes', logits.shape[1]))

    if 'letkd' in config.parts:
        return
    model.train()
    if hasattr(getattr(model, 'teacher', None), 'hook_attached'):  # what kdplug.EMATeacherHook does before training
        model.teacher.hook_attached = True
    hooks = [str(hook['type']) for hook in cfg.get('custom_hooks', [])]
    for module in model.modules():  # a learned temperature: what kdplug.CTKDCurriculumHook does, if the config has it
        if getattr(module, 'scheduled', None) is False and 'kdplug.CTKDCurriculumHook' in hooks:
            module.scheduled = True
    data = model.data_preprocessor(real_batch(cifar10_root, size, views=pipeline_views(cfg)), training=True)
    losses = model(**data, mode='loss')
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total), log_vars
    if model_cfg.type.startswith('kdplug.'):
        assert any(key.startswith('distill.') for key in log_vars), f'no distillation loss in {list(log_vars)}'
        assert all(torch.isfinite(value) for value in losses.values()), log_vars
    total.backward()
    student = getattr(model, 'student', model)
    head_grad = [p.grad for name, p in student.named_parameters() if name.startswith('head.')]
    assert head_grad and all(g is not None and g.abs().sum() > 0 for g in head_grad), 'no gradient reached the head'


def test_teacher_runs_without_grad_in_the_students_autocast(tmp_path, teacher_checkpoint):
    """What AmpOptimWrapper does on a GPU (float16), checked on CPU with bfloat16 autocast."""
    from mmpretrain.structures import DataSample
    from kdplug.registry import MODELS
    model = MODELS.build(distiller_cfg(teacher_checkpoint))
    seen = {}
    model.teacher_model.head.register_forward_hook(
        lambda module, args, out: seen.update(dtype=out.dtype, grad=torch.is_grad_enabled()))
    samples = [DataSample().set_gt_label(i % 10) for i in range(4)]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(torch.randn(4, 3, 32, 32), samples)
    assert seen == {'dtype': torch.bfloat16, 'grad': False}
    assert losses['distill.loss_kd'].dtype == torch.float32 and torch.isfinite(losses['distill.loss_kd'])


def test_amp_optim_wrapper_runs_the_teacher_in_the_students_autocast(cifar10_root, tmp_path, teacher_checkpoint,
                                                                     monkeypatch):
    """mmengine's AmpOptimWrapper itself, through the Runner. It refuses to start without an accelerator (patched
    here) and its CPU autocast takes bfloat16 only; on a GPU the same path runs in float16 with a GradScaler."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp
    monkeypatch.setattr(amp, 'is_cuda_available', lambda: True)
    cfg = run_config(cifar10_root, tmp_path, teacher_checkpoint, max_iters=2)
    cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='bfloat16')
    runner = make_runner(cfg)
    seen = []
    runner.model.teacher_model.head.register_forward_hook(
        lambda module, args, out: seen.append((out.dtype, torch.is_grad_enabled())))
    before = {k: v.clone() for k, v in runner.model.student.state_dict().items()}
    runner.train()
    assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper'
    in_training = seen[-2:]  # the first calls are the teacher's evaluation before training (float32)
    assert in_training == [(torch.bfloat16, False)] * 2
    train = [r for r in scalars(tmp_path) if 'distill.loss_kd' in r]
    assert len(train) == 2 and all(0 < r['distill.loss_kd'] < float('inf') for r in train)
    assert not torch.equal(before['head.fc.weight'], runner.model.student.state_dict()['head.fc.weight'])


def test_teacher_from_a_url_is_downloaded_with_weights_only(tmp_path, teacher_checkpoint, monkeypatch):
    from kdplug.registry import MODELS
    calls = []

    def fake_download(url, **kwargs):  # torch.hub's downloader, without the network
        calls.append((url, kwargs))
        return torch.load(teacher_checkpoint, map_location='cpu', weights_only=True)
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', fake_download)
    url = 'https://example.org/teachers/resnet20_cifar10.pth'
    model = MODELS.build(distiller_cfg(url))
    assert calls == [(url, {'map_location': 'cpu', 'weights_only': True})]
    expected = torch.load(teacher_checkpoint, weights_only=True)['state_dict']
    assert all(torch.equal(model.teacher_model.state_dict()[k], v) for k, v in expected.items())


def test_a_teacher_trained_on_the_classes_in_another_order_is_refused_before_training(cifar10_root, teacher_checkpoint,
                                                                                       tmp_path, one_thread):
    """The CIFAR-10 configs read a list file, so their datasets (and so their checkpoints) knew no class names and a
    teacher whose labels were permuted taught without a word; now the config names them and the run compares."""
    from runner_helpers import make_runner, run_config
    checkpoint = torch.load(teacher_checkpoint, weights_only=False)
    classes = ('dog', 'airplane', 'automobile', 'bird', 'cat', 'deer', 'frog', 'horse', 'ship', 'truck')
    checkpoint.setdefault('meta', {})['dataset_meta'] = {'classes': classes}
    torch.save(checkpoint, tmp_path / 'permuted.pth')
    runner = make_runner(run_config(cifar10_root, tmp_path / 'run', str(tmp_path / 'permuted.pth'), max_iters=1))
    with pytest.raises(ValueError, match=r"trained on the same classes in another order \(class 0: 'dog' in the "
                                         r"teacher, 'airplane' here"):
        runner.train()
    assert not list((tmp_path / 'run').glob('iter_*.pth'))


def test_labels_outside_the_students_classes_stop_the_run_before_the_first_step(cifar10_root, teacher_checkpoint,
                                                                                tmp_path):
    """A label 12 in an annotation file of 10 classes: torch's cross-entropy stopped at some step with "Target 12
    is out of bounds", without the image or the fix."""
    images = sorted((cifar10_root / 'train').glob('*/*.jpg'))[:8]
    (tmp_path / 'train.txt').write_text(''.join(f'{p.relative_to(cifar10_root / "train")} {i % 10}\n'
                                                for i, p in enumerate(images[:-1]))
                                        + f'{images[-1].relative_to(cifar10_root / "train")} 12\n')
    cfg = run_config(cifar10_root, tmp_path / 'work', teacher_checkpoint, max_iters=1)
    cfg.train_dataloader.dataset.ann_file = str(tmp_path / 'train.txt')
    cfg.train_dataloader.dataset.data_prefix = 'train'
    runner = make_runner(cfg)
    with pytest.raises(ValueError, match=r'1 training samples have a label outside the 10 classes of the student\'s '
                                         rf'head \(0..9\), e.g. sample 7 \(.*{images[-1].name}\) labelled 12: fix the '
                                         'annotation file'):
        runner.train()
