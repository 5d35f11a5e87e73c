"""Self-distillation without a separate teacher: USKD's weak head (WeakHeadTeacher) and the EMA self-teacher
(EMATeacher), each a teacher source of kdplug.Distiller, on real CIFAR-10."""
import pytest
import torch

from conftest import REPO
from runner_helpers import EMA_CONFIG, make_runner, run_config, scalars

USKD_CONFIG = REPO / 'configs' / 'uskd' / 'uskd_resnet18_240e_cifar100.py'


def uskd_runner(cifar10_root, work_dir, **overrides):
    cfg = run_config(cifar10_root, work_dir, model_from=USKD_CONFIG, **overrides)
    cfg.model.student.head.num_classes = 10
    return make_runner(cfg)


def test_uskd_trains_the_weak_head_and_exports_the_plain_student(cifar10_root, tmp_path):
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS
    from kdplug.distillers.export import export_student
    runner = uskd_runner(cifar10_root, tmp_path, max_iters=2)
    model = runner.model
    # the student is the config's (out_indices=(3,)): the weak head reads layer3 through a forward hook
    assert model.student.backbone.out_indices == (3, ) and model.teacher_model is None
    weak_head = model.teacher.head
    assert (weak_head.in_features, weak_head.out_features) == (256, 10)
    assert {'teacher.head.weight', 'teacher.head.bias'} <= set(model.state_dict())
    assert {id(p) for p in weak_head.parameters()} <= {id(p) for p in model.parameters()}, 'weak head not trained'
    weak_before = weak_head.weight.clone()
    runner.train()
    assert not torch.equal(weak_before, weak_head.weight), 'the weak head did not train'
    train = [r for r in scalars(tmp_path) if 'distill.loss_uskd' in r]
    assert len(train) == 2 and all(torch.isfinite(torch.tensor(r['distill.loss_uskd'])) for r in train)
    exported = export_student(str(tmp_path / 'iter_2.pth'), str(tmp_path / 'student.pth'))['state_dict']
    assert not any(key.startswith('teacher') for key in exported), 'the weak head was exported'
    student_cfg = run_config(cifar10_root, tmp_path, model_from=USKD_CONFIG).model.student
    student_cfg.head.num_classes = 10
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        plain = MODELS.build(student_cfg)  # no weak head: the exported student fits exactly
    load_checkpoint(plain, str(tmp_path / 'student.pth'), strict=True)
    plain.eval(), model.eval()
    inputs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain(inputs), model(inputs))


def test_uskd_hands_mixup_labels_to_the_loss_unreduced(cifar10_root, tmp_path):
    """Mixup / cutmix leave soft labels in gt_score: the distiller passes them whole, and the loss keeps both mixed
    classes (their top-2), as the authors' code does, instead of their argmax."""
    import torch.nn.functional as F
    from mmengine.registry import DefaultScope, MODELS
    from mmpretrain.structures import DataSample
    from kdplug.losses import USKDLoss
    from kdplug.tasks.classification import ClassificationTask
    cfg = run_config(cifar10_root, tmp_path, model_from=USKD_CONFIG)
    cfg.model.student.head.num_classes = 10
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.train()
    torch.manual_seed(0)
    inputs = torch.randn(4, 3, 32, 32)
    first, second = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 3])  # the last sample mixed with its class
    soft = 0.6 * F.one_hot(first, 10).float() + 0.4 * F.one_hot(second, 10).float()
    samples = [DataSample().set_gt_label(int(a)).set_gt_score(row) for a, row in zip(first, soft)]
    losses = model.loss(inputs, samples)
    with model.task.recording(model.student, ['layer3']) as feats:  # train mode: batch statistics, same outputs
        logits = ClassificationTask.logits(model.student, inputs)
    weak = model.teacher.head(F.adaptive_avg_pool2d(feats['layer3'], 1).flatten(1))  # the pooled layer3 feature
    uskd = USKDLoss(alpha=0.1, beta=0.1, mu=0.1)
    torch.testing.assert_close(losses['distill.loss_uskd'], uskd(logits, weak, soft))
    assert not torch.allclose(losses['distill.loss_uskd'], uskd(logits, weak, first))


def test_uskd_weak_head_position_must_be_in_the_students_backbone(cifar10_root, tmp_path):
    """The weak head's position names a submodule of the student's backbone; another is refused at build, naming
    the positions there are."""
    cfg = run_config(cifar10_root, tmp_path, model_from=USKD_CONFIG)
    cfg.model.teacher.position = 'stage3'
    with pytest.raises(ValueError, match=r"the student's backbone \(\w+\) has no position 'stage3'.*layer3"):
        make_runner(cfg)


def test_ema_teacher_follows_the_student_and_survives_resume(cifar10_root, tmp_path):
    runner = make_runner(run_config(cifar10_root, tmp_path, model_from=EMA_CONFIG, max_iters=2))
    model = runner.model
    runner.train()
    ema = model.teacher.ema
    assert ema is model.teacher_model and ema is not model.student
    assert not ema.training and all(not p.requires_grad for p in ema.parameters())
    assert not {id(p) for p in ema.parameters()} & {id(p) for p in model.student.parameters()}
    xi = model.teacher.xi
    # after the copy at step 1 and one EMA update at step 2 (and the update after step 2):
    # the teacher lies strictly between its start and the student
    student = dict(model.student.named_parameters())
    moved = [name for name, p in ema.named_parameters() if not torch.equal(p, student[name])]
    assert moved, 'the EMA teacher equals the student: no averaging happened'
    state = model.state_dict()
    assert any(k.startswith('teacher.ema.') for k in state) and 'teacher.started' in state, \
        'the EMA teacher must be checkpointed'
    train = [r for r in scalars(tmp_path) if 'distill.loss_kd' in r]
    assert len(train) == 2 and all(torch.isfinite(torch.tensor(r['distill.loss_kd'])) for r in train)
    resumed = make_runner(run_config(cifar10_root, tmp_path, model_from=EMA_CONFIG, max_iters=3, resume=True))
    resumed.train_loop  # build the loop, then load the checkpoint as train() does
    resumed.load_or_resume()
    expected, restored = model.teacher.state_dict(), resumed.model.teacher.state_dict()
    assert list(restored) == list(expected)
    for name, p in expected.items():
        torch.testing.assert_close(restored[name], p, msg=f'EMA teacher {name} not restored')
    assert bool(resumed.model.teacher.started) and resumed.model.teacher.xi == xi


def test_ema_update_is_the_papers_formula(cifar10_root, tmp_path):
    """theta_T <- xi theta_T + (1 - xi) theta_S; the first update copies; buffers are copied."""
    model = make_runner(run_config(cifar10_root, tmp_path, model_from=EMA_CONFIG)).model
    teacher = model.teacher
    assert not bool(teacher.started)
    teacher.update(model.student)
    assert bool(teacher.started)
    start = {k: v.clone() for k, v in teacher.ema.state_dict().items()}
    assert all(torch.equal(start[k], v) for k, v in model.student.state_dict().items())
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
        for name, b in model.student.named_buffers():
            if b.is_floating_point():
                b.add_(2.0)
    teacher.update(model.student)
    params = dict(model.student.named_parameters())
    for name, p in teacher.ema.named_parameters():
        torch.testing.assert_close(p, start[name] + (1 - teacher.xi) * 1.0)
        torch.testing.assert_close(params[name], start[name] + 1.0)
    for name, b in teacher.ema.named_buffers():
        torch.testing.assert_close(b, dict(model.student.named_buffers())[name])


def test_ema_teacher_moves_only_after_optimizer_steps(cifar10_root, tmp_path):
    """With gradient accumulation over 2 iterations, 4 iterations make 2 optimizer steps, hence 2 EMA updates."""
    cfg = run_config(cifar10_root, tmp_path, model_from=EMA_CONFIG, max_iters=4)
    cfg.optim_wrapper.accumulative_counts = 2
    runner = make_runner(cfg)
    updates = []
    teacher = runner.model.teacher
    update = teacher.update
    teacher.update = lambda student: (updates.append(runner.iter), update(student))[1]
    runner.train()
    # the first call comes from the distiller's first loss (the copy), then one per optimizer step (iterations 2, 4)
    assert len(updates) == 3


def test_ema_teacher_refuses_to_train_without_its_hook(cifar10_root, tmp_path):
    cfg = run_config(cifar10_root, tmp_path, model_from=EMA_CONFIG)
    cfg.custom_hooks = []
    with pytest.raises(RuntimeError, match='EMATeacherHook'):
        make_runner(cfg).train()


def test_the_ema_hook_listed_twice_is_refused(cifar10_root, tmp_path):
    """Two hooks (a config and its _base_ both listing it) averaged twice per step: xi 0.99 became 0.98."""
    cfg = run_config(cifar10_root, tmp_path, model_from=EMA_CONFIG)
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type='kdplug.EMATeacherHook')]
    with pytest.raises(ValueError, match='2 EMATeacherHooks in the run'):
        make_runner(cfg).train()


@pytest.mark.parametrize('xi,said', [('fast', "xi must be a number, got 'fast'"), (1.0, r'must lie in \[0, 1\)'),
                                     (float('nan'), 'xi must be a finite number')])
def test_the_ema_decay_is_validated_at_build(xi, said):
    """A string gave Python's "'<=' not supported between float and str"."""
    from kdplug.registry import TEACHERS
    with pytest.raises(ValueError, match=said):
        TEACHERS.build(dict(type='EMATeacher', xi=xi))
