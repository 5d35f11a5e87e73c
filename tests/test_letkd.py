"""letKD: the KD layer inside the student, the codeword fitting on real CIFAR-10 images, training through the Runner,
and the student export that keeps the layer."""
import copy
import math
import os
import textwrap

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from runner_helpers import data_options, make_runner, run_config, scalars

LETKD_CONFIG = REPO / 'configs' / 'letkd' / 'letkd-2_resnet20_resnet8_4e_cifar10-10k.py'


def letkd_config(cifar10_root, work_dir, teacher_checkpoint, codewords, **kwargs):
    cfg = run_config(cifar10_root, work_dir, config=LETKD_CONFIG, **kwargs)
    cfg.model.teacher.checkpoint = teacher_checkpoint
    for loss in cfg.model.losses.values():
        loss.codewords = str(codewords)
    return cfg


@pytest.fixture(scope='module')
def codewords(cifar10_root, teacher_checkpoint, tmp_path_factory):
    """The command line (kdplug.tools.fit_codewords, behind tools/fit_codewords.py) on the 80 real training images
    (test pipeline), on CPU."""
    from kdplug.tools.fit_codewords import run
    path = tmp_path_factory.mktemp('letkd_codewords') / 'codewords.pth'
    files = run([str(LETKD_CONFIG), '--out', str(path), '--device', 'cpu', '--iters', '10', '--cfg-options',
                  *data_options(cifar10_root), f'model.teacher.checkpoint={teacher_checkpoint}'])
    return path, files[str(path)]


# ------------------------------------------------------------------------------------------------------- the layer


def test_layer_keeps_the_shape_predicts_k_assignments_and_lets_gradients_through():
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.letkd.loss import kl_batchmean, rows
    torch.manual_seed(0)
    layer = LetKDLayer(in_channels=16, num_codewords=24)
    x = torch.randn(3, 16, 5, 7, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape
    assert layer.assignment_logits.shape == (3, 24, 5, 7)
    target = torch.softmax(torch.randn(3 * 5 * 7, 24), dim=1)
    (kl_batchmean(target, rows(layer.assignment_logits)) + out.square().mean()).backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f'no gradient for {name}'
    assert x.grad.abs().sum() > 0
    # cosine assignment: scaling the student feature does not change the prediction
    torch.testing.assert_close(layer.assign(3 * x), layer.assign(x))
    layer.eval()
    layer(x)
    assert layer.assignment_logits is None, 'logits kept at inference'
    assert torch.equal(LetKDLayer(16, 24, alpha=0.0).eval()(x), x), 'alpha = 0 must remove the transform'
    layer.train()
    layer(x)
    copied = copy.deepcopy(layer)  # EMA copies of the student: the cached logits (a graph) are not copied
    assert copied.assignment_logits is None and layer.assignment_logits is not None


def test_soft_assignment_favours_the_nearest_codeword_and_the_loss_is_a_batchmean_kl():
    from kdplug.letkd.loss import kl_batchmean, penultimate_assignment
    codewords = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    p = penultimate_assignment(torch.tensor([[9.0, 1.0], [0.5, 0.2]]), codewords)
    assert p.argmax(1).tolist() == [1, 0] and torch.allclose(p.sum(1), torch.ones(2))
    logits = torch.randn(6, 3)
    target = torch.softmax(torch.randn(6, 3), dim=1)
    expected = F.kl_div(torch.log_softmax(logits, 1), target, reduction='batchmean')
    torch.testing.assert_close(kl_batchmean(target, logits), expected)
    assert kl_batchmean(target, target.log()).abs() < 1e-6


def test_kmeans_and_lda_on_separable_data():
    from kdplug.letkd.codewords import assign_subclasses, fit_lda, fit_subclasses, kmeans, subclass_scores
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [0.0, 0.0, 20.0]])
    x = torch.cat([c + torch.randn(100, 3, generator=gen) for c in centers])
    found, labels = kmeans(x, 4, seed=1)
    assert torch.cdist(found, centers).min(0).values.max() < 0.5
    assert all(len(set(labels[i * 100:(i + 1) * 100].tolist())) == 1 for i in range(4))
    with pytest.warns(UserWarning, match='capped'):
        assert kmeans(x[:3], 5)[0].shape == (3, 3)
    # LDA: the classes differ along dimension 0 only; the other dimension has a large within-class spread
    y = torch.arange(3).repeat_interleave(200)
    data = torch.stack([y.float() * 2 + 0.3 * torch.randn(600, generator=gen), 10 * torch.randn(600, generator=gen)],
                       dim=1)
    weight, bias = fit_lda(data, y, num_classes=3)
    assert weight.shape == (2, 2) and bias.shape == (2, )
    direction = F.normalize(weight[0], dim=0)
    assert direction[0].abs() > 0.99, direction
    z = data @ weight.t() + bias
    within = torch.stack([z[y == c] - z[y == c].mean(0) for c in range(3)]).reshape(-1, 2)
    torch.testing.assert_close(within.t() @ within / (600 - 3), torch.eye(2), atol=1e-2, rtol=0)
    with pytest.warns(UserWarning, match='1 of 4 classes have no feature vectors'):
        prototypes, valid = fit_subclasses(z, y, num_classes=4, k=2)  # class 3 has no data
    assert valid.tolist() == [True] * 6 + [False] * 2
    h1 = assign_subclasses(z, y, prototypes, valid, 2)
    assert torch.equal(h1 // 2, y), 'each position goes to a sub-class of its own class'
    scores = subclass_scores(z, y, prototypes, valid, 2)
    torch.testing.assert_close(scores.sum(1), torch.ones(8))
    assert scores[6, 6] == 1 and scores[:, 6:].sum() == 2, 'an empty sub-class is one-hot on itself, never a target'


# ------------------------------------------------------------------------------------------------- offline tool


def test_fit_codewords_on_real_images(codewords, teacher_checkpoint):
    from kdplug.letkd.io import CODEWORDS_FORMAT, load_codewords_file
    path, written = codewords
    loaded = torch.load(path, weights_only=True)
    assert loaded['format'] == CODEWORDS_FORMAT == load_codewords_file(str(path))['format']
    assert loaded['meta']['teacher_checkpoint'] == teacher_checkpoint
    penult, inter = loaded['sections']['out'], loaded['sections']['layer2']
    # 80 images: 80 x 8 x 8 penultimate positions of the resnet20 teacher (64 channels), K = 512 as configured
    assert penult['level'] == 'penultimate' and penult['num_vectors'] == 80 * 64 and penult['num_images'] == 80
    assert penult['codewords'].shape == (512, 64) and torch.isfinite(penult['codewords']).all()
    assert len(torch.unique(penult['codewords'], dim=0)) == 512
    # intermediate: 80 x 16 x 16 positions, 32 channels, LDA to 9 dimensions, 8 sub-classes of each of 10 classes
    assert inter['level'] == 'intermediate' and inter['num_vectors'] == 80 * 256 and inter['subclasses'] == 8
    assert inter['lda_weight'].shape == (9, 32) and inter['prototypes'].shape == (80, 9)
    assert inter['valid'].all() and inter['scores'].shape == (80, 80)
    torch.testing.assert_close(inter['scores'].sum(1), torch.ones(80))
    assert torch.equal(written['sections']['out']['codewords'], penult['codewords'])


def test_the_codewords_file_is_checked_when_written_and_read(tmp_path):
    """kdplug.letkd.io: written with its folder, read through the weights-only loader, format, version and sections
    checked."""
    import re
    from kdplug.letkd.io import codewords_section, load_codewords_file, new_codewords_file, save_codewords_file
    contents = new_codewords_file({'seed': 0})
    contents['sections']['out'] = {'level': 'penultimate', 'codewords': torch.randn(4, 3)}
    path = tmp_path / 'new' / 'codewords.pth'
    save_codewords_file(str(path), contents)
    loaded = load_codewords_file(str(path))
    assert loaded['meta'] == {'seed': 0}
    assert torch.equal(codewords_section(loaded, 'out', 'penultimate', 'here')['codewords'],
                       contents['sections']['out']['codewords'])
    with pytest.raises(ValueError, match="codewords of 'out' are for the penultimate level, the loss is "
                                         "'intermediate'"):
        codewords_section(loaded, 'out', 'intermediate', 'here')
    with pytest.raises(ValueError, match=r"no codewords for the student module 'layer2' \(it has \['out'\]\)"):
        codewords_section(loaded, 'layer2', 'penultimate', 'here')
    with pytest.raises(ValueError, match=r"lacks \['codewords'\]"):
        codewords_section({'level': 'penultimate'}, 'out', 'penultimate', 'here')
    torch.save({**contents, 'format': 'kdplug.letkd.codewords/2'}, tmp_path / 'v2.pth')
    with pytest.raises(ValueError, match=re.escape("format 'kdplug.letkd.codewords/2'; this kdplug reads "
                                                   "'kdplug.letkd.codewords/1': fit them again")):
        load_codewords_file(str(tmp_path / 'v2.pth'))
    torch.save({'state_dict': {}}, tmp_path / 'weights.pth')
    with pytest.raises(ValueError, match='is not a letKD codewords file'):
        load_codewords_file(str(tmp_path / 'weights.pth'))
    with pytest.raises(ValueError, match='not a letKD codewords file'):
        save_codewords_file(str(tmp_path / 'bad.pth'), {'sections': {}})
    assert not (tmp_path / 'bad.pth').exists()


def test_the_intermediate_level_needs_a_task_with_image_targets():
    """Detection images have no class: the fit of an intermediate level says so (the penultimate one needs none)."""
    import types
    from kdplug.letkd.fitting import CodewordsFitError, _labels
    from kdplug.tasks.classification import ClassificationTask
    from kdplug.tasks.detection import TwoStageDetectionTask
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(i) for i in (3, 1, 2)]
    assert _labels(types.SimpleNamespace(task=ClassificationTask()), samples, 2).tolist() == [3, 1]
    with pytest.raises(CodewordsFitError, match='TwoStageDetectionTask gives none.*penultimate level only'):
        _labels(types.SimpleNamespace(task=TwoStageDetectionTask()), samples, 2)


def test_codewords_are_better_than_random_features(codewords, cifar10_root, teacher_checkpoint, tmp_path):
    """The k-means codewords quantise the teacher's penultimate features of the training images well."""
    from mmengine.registry import DefaultScope
    from kdplug.letkd import fitting
    from kdplug.letkd.codewords import nearest
    path, loaded = codewords
    cfg = letkd_config(cifar10_root, tmp_path, teacher_checkpoint, path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = fitting.build_distiller(cfg, torch.device('cpu'))
        specs = fitting.letkd_specs(model, None)
        fitting.collect(model, fitting.build_loader(cfg, None, 0, 0, False), specs, torch.device('cpu'), None,
                        10 ** 9, 0)
    x = next(s for s in specs if s['module'] == 'out')['x']
    fitted = nearest(x, loaded['sections']['out']['codewords'])[1].mean()
    sampled = nearest(x, x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:512]])[1].mean()
    assert fitted < sampled


# ------------------------------------------------------------------------------------------- training and export


def test_runner_trains_the_layers_and_the_export_keeps_them(cifar10_root, tmp_path, teacher_checkpoint, codewords):
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS
    from kdplug.distillers.export import export_student
    cfg = letkd_config(cifar10_root, tmp_path, teacher_checkpoint, codewords[0], max_iters=2)
    runner = make_runner(cfg)
    model = runner.model
    layers = {name: model.student.backbone.module_at(name) for name in ('layer2', 'out')}
    before = {name: layer.assign.weight.clone() for name, layer in layers.items()}
    teacher_before = {k: v.clone() for k, v in model.teacher_model.state_dict().items()}
    runner.train()
    for name, layer in layers.items():
        assert not torch.equal(before[name], layer.assign.weight), f'the {name} layer did not train'
    assert teacher_before and all(torch.equal(v, model.teacher_model.state_dict()[k])
                                  for k, v in teacher_before.items())
    train = [r for r in scalars(tmp_path) if 'distill.loss_letkd_penult' in r]
    assert len(train) == 2
    for r in train:
        assert all(torch.isfinite(torch.tensor(r[k]))
                   for k in ('distill.loss_letkd_inter', 'distill.loss_letkd_penult'))
        total = r['student.loss'] + r['distill.loss_letkd_inter'] + r['distill.loss_letkd_penult']
        assert abs(r['loss'] - total) < 1e-3, 'diagnostics must not be summed into the loss'
        assert 0 <= r['distill.letkd_penult_agreement'] <= 1
        # the diagnostics of the issue "is p_T near one-hot?": mean entropies in nats, between 0 and log K
        for name, k in (('inter', 8 * 10), ('penult', 512)):
            for side in ('teacher', 'student'):
                assert 0 <= r[f'distill.letkd_{name}_entropy_{side}'] <= math.log(k) + 1e-4
    assert not any(k.startswith(('teacher', 'losses')) for k in model.state_dict()), 'codewords or teacher saved'
    # export: the student with its KD layers, loaded through mmpretrain's registry from the student config
    exported = tmp_path / 'student.pth'
    state = export_student(str(tmp_path / 'iter_2.pth'), str(exported))['state_dict']
    assert {'backbone.inserted.out.assign.weight', 'backbone.inserted.layer2.bn.running_mean',
            'backbone.inserted.out.embed.scale'} <= set(state)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        plain = MODELS.build(copy.deepcopy(cfg.model.student))
    load_checkpoint(plain, str(exported), map_location='cpu', strict=True)
    plain.eval(), model.eval()
    inputs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(plain(inputs), model(inputs))
    without_layers = plain.backbone.backbone  # the layers are used at inference: skipping them changes the logits
    assert not torch.allclose(plain.head(plain.neck(without_layers(inputs))), plain(inputs))


def test_model_builds_without_the_codewords_file_and_training_names_the_tool(cifar10_root, tmp_path,
                                                                             teacher_checkpoint):
    from mmengine.registry import DefaultScope, MODELS
    from mmpretrain.structures import DataSample
    cfg = letkd_config(cifar10_root, tmp_path, teacher_checkpoint, tmp_path / 'missing.pth')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model.train()
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    with pytest.raises(FileNotFoundError, match=r'missing.pth.*tools/fit_codewords.py'):
        model.loss(torch.randn(2, 3, 32, 32), samples)


def test_codewords_of_another_teacher_or_class_count_and_a_changing_teacher_are_refused(
        cifar10_root, tmp_path, teacher_checkpoint, codewords):
    """The file records its teacher's sha256: a retrained teacher of the same architecture passed the channel check
    and trained on another teacher's assignments. Sub-classes of 20 classes against a file of 10 took the "fewer
    codewords" padding (a warning) and trained on wrong targets. An EMA teacher has no fixed checkpoint to fit from."""
    from mmengine.registry import DefaultScope, MODELS
    from mmpretrain.structures import DataSample

    from runner_helpers import save_teacher
    from kdplug.letkd.loss import LetKDIntermediateLoss
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    path, _ = codewords
    retrained = save_teacher(tmp_path / 'retrained.pth', seed=1)
    cfg = letkd_config(cifar10_root, tmp_path, retrained, path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model).train()
        with pytest.raises(ValueError, match=r'fitted from another teacher checkpoint .*teacher.pth.* than this '
                                             r"run's .*retrained.pth.*Fit them again"):
            model.loss(torch.randn(2, 3, 32, 32), samples)
        ema = letkd_config(cifar10_root, tmp_path, teacher_checkpoint, path).model
        ema.teacher = dict(type='EMATeacher', xi=0.99)
        with pytest.raises(ValueError, match=r"codewords fitted once from a fixed teacher's checkpoint.*EMA.*"
                                             r"CheckpointTeacher"):
            MODELS.build(ema)
    loss = LetKDIntermediateLoss('layer2', codewords=str(path))
    layer = torch.nn.Module()
    layer.assignment_logits = torch.randn(1, 160, 16, 16)  # a layer of 20 classes x 8 sub-classes
    with pytest.raises(ValueError, match=r'fitted for 10 classes x 8 sub-classes = 80 assignments, the student layer '
                                         r'predicts 160: fitted on another dataset'):
        loss(layer, torch.randn(1, 32, 16, 16), torch.tensor([15]))


def test_fit_codewords_refuses_arguments_it_cannot_use_before_fitting(tmp_path, capsys, codewords):
    """--out a folder failed after the whole fit; counts of 0 failed deep in the fit (or were ignored); a codewords
    file cut short says to fit it again (it said how an mmengine run names its checkpoints)."""
    from kdplug.letkd.io import load_codewords_file
    from kdplug.tools.fit_codewords import parse_args
    for argv, said in ((['--out', str(tmp_path)], 'is a folder: give the codewords file to write'),
                       (['--max-vectors', '0'], '--max-vectors: 0 is not a positive integer'),
                       (['--max-images', '-5'], '--max-images: -5 is not a positive integer'),
                       (['--batch-size', '0'], '--batch-size: 0 is not a positive integer')):
        with pytest.raises(SystemExit):
            parse_args([str(LETKD_CONFIG), *argv])
        assert said in capsys.readouterr().err, argv
    data = codewords[0].read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(RuntimeError, match=r'cut.pth.*truncated.*Fit them again: python tools/fit_codewords.py'):
        load_codewords_file(str(tmp_path / 'cut.pth'))


def test_loss_reports_the_mean_entropy_of_both_assignments():
    """Hand-computed: two codewords (0, 0) and (1, 0); a teacher position at (0, 0) has squared distances (0, 1),
    p_T = (e, 1) / (e + 1); one at (0.5, 0) is equidistant, p_T uniform. The student's logits (0, 0) and (log 3, 0)
    give p_S = (1/2, 1/2) and (3/4, 1/4)."""
    from torch import nn
    from kdplug.letkd.loss import LetKDPenultimateLoss

    def entropy(*p):
        return -sum(x * math.log(x) for x in p)

    loss = LetKDPenultimateLoss('out')
    loss.load_codewords(dict(level='penultimate', codewords=torch.tensor([[0.0, 0.0], [1.0, 0.0]])))
    teacher = torch.tensor([[0.0, 0.5], [0.0, 0.0]]).view(1, 2, 1, 2)  # channels x positions: (0, 0) and (0.5, 0)
    layer = nn.Module()
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).view(1, 2, 1, 2).requires_grad_()
    layer.assignment_logits = logits
    out = loss(layer, teacher)
    a = math.e / (math.e + 1)
    torch.testing.assert_close(out['entropy_teacher'], torch.tensor((entropy(a, 1 - a) + math.log(2)) / 2))
    torch.testing.assert_close(out['entropy_student'], torch.tensor((math.log(2) + entropy(0.75, 0.25)) / 2))
    assert not out['entropy_teacher'].requires_grad and not out['entropy_student'].requires_grad
    assert not any('loss' in key for key in out if key != 'loss'), 'a key with "loss" would be summed by mmengine'
    # raw squared distances of a spread-out teacher: p_T one-hot in float32, entropy exactly 0 (0 log 0 = 0, no NaN)
    layer.assignment_logits = logits
    far = torch.tensor([[60.0, -60.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # distances (3600, 3481) and (3600, 3721)
    assert loss(layer, far)['entropy_teacher'] == 0


def test_loss_pools_a_larger_teacher_map_and_checks_the_sizes():
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.letkd.loss import LetKDPenultimateLoss
    layer = LetKDLayer(8, 6)
    layer(torch.randn(2, 8, 4, 4))
    loss = LetKDPenultimateLoss('out', codewords=None)
    loss.load_codewords({'level': 'penultimate', 'codewords': torch.randn(4, 5)})  # 4 < 6 codewords: padded
    with pytest.warns(UserWarning, match='2 extra outputs get target 0'):
        out = loss(layer, torch.randn(2, 5, 8, 8), torch.tensor([0, 1]))
    assert out['loss'].shape == () and torch.isfinite(out['loss'])
    layer(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match='has 7 channels, the codewords 5'):
        loss(layer, torch.randn(2, 7, 8, 8))
    with pytest.raises(RuntimeError, match='no assignment logits'):
        loss(layer, torch.randn(2, 5, 8, 8))


def test_wrong_positions_are_named(tmp_path, teacher_checkpoint):
    from kdplug.registry import MODELS
    with pytest.raises(ValueError, match="no submodule 'layer9'.*layer1"):
        MODELS.build(dict(type='BackboneWithModules', backbone=dict(type='kdplug.ResNet8'),
                          modules=dict(layer9=dict(type='LetKDLayer', in_channels=32, num_codewords=8))))
    from runner_helpers import classifier_cfg, distiller_cfg
    student = classifier_cfg()
    student['backbone'] = dict(type='kdplug.BackboneWithModules', backbone=dict(type='kdplug.ResNet8'),
                               modules=dict(out=dict(type='kdplug.LetKDLayer', in_channels=64, num_codewords=8)))
    cfg = distiller_cfg(teacher_checkpoint, student=student, losses=dict(letkd=dict(type='LetKDPenultimateLoss',
                                                                                     student_module='layer2')))
    with pytest.raises(ValueError, match="student module at 'layer2', but the student has modules at 'out'"):
        MODELS.build(cfg)
    cfg['losses'] = dict(letkd=dict(type='LetKDPenultimateLoss', student_module='out', teacher_stage='stage3'))
    with pytest.raises(ValueError, match=r"the teacher's backbone \(\w+\) has no position 'stage3'.*layer1"):
        MODELS.build(cfg)


# ----------------------------------------------------------------------------------------------------- plugins


def test_student_modules_are_a_plugin_kind_open_to_third_parties(python, tmp_path):
    from test_plugins import fake_distribution
    fake_distribution(tmp_path, 'gatekd', '''
        import torch
        from kdplug import hookimpl

        class GateLayer(torch.nn.Module):
            def __init__(self, channels):
                super().__init__()
                self.gate = torch.nn.Parameter(torch.zeros(channels))
            def forward(self, x):
                return x * (1 + self.gate.view(1, -1, 1, 1))

        @hookimpl
        def kdplug_student_modules():
            return [GateLayer]
    ''')
    result = python(textwrap.dedent('''
        import torch
        from mmengine.registry import DefaultScope
        from mmpretrain.registry import MODELS
        from kdplug.plugins import plugin_infos
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = MODELS.build(dict(
                type='ImageClassifier', neck=dict(type='GlobalAveragePooling'),
                backbone=dict(type='kdplug.BackboneWithModules', backbone=dict(type='kdplug.ResNet8'),
                              modules=dict(layer2=dict(type='GateLayer', channels=32))),
                head=dict(type='LinearClsHead', num_classes=10, in_channels=64)))
        print(model(torch.randn(1, 3, 32, 32)).shape[1])
        infos = {i.name: i.contributions for i in plugin_infos()}
        print(infos['gatekd']['kdplug_student_modules'], infos['kdplug.letkd.plugin']['kdplug_student_modules'])'''),
        env={'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])})
    assert result.stdout.splitlines() == ['10', "['GateLayer'] ['LetKDLayer', 'LetKDPenultimateLoss', "
                                          "'LetKDIntermediateLoss']"], result.stderr


def test_teacher_assignment_stays_float32_under_autocast():
    """--amp runs the loss under autocast: codeword distances in bfloat16 would scramble the teacher's assignment."""
    from torch import nn
    from kdplug.letkd.loss import LetKDPenultimateLoss
    torch.manual_seed(0)
    teacher_feature = 20 + torch.randn(2, 64, 4, 4)  # post-ReLU-like magnitudes: large norms, small differences
    codewords = teacher_feature.permute(0, 2, 3, 1).reshape(-1, 64)[::2] + 0.1 * torch.randn(16, 64)
    loss = LetKDPenultimateLoss('out')
    loss.load_codewords(dict(level='penultimate', codewords=codewords))
    layer = nn.Module()
    logits = torch.randn(2, 16, 4, 4)
    layer.assignment_logits = logits
    plain = loss(layer, teacher_feature)['loss']
    layer.assignment_logits = logits
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mixed = loss(layer, teacher_feature)['loss']
    torch.testing.assert_close(mixed, plain)


def test_each_letkd_level_is_its_own_loss_and_the_common_part_is_none():
    """letKD-1's and letKD-2's teacher sides are two losses with their own hyper-parameters (the intermediate level
    takes no temperature), not a level= switch; the common part cannot be built."""
    from kdplug.letkd.loss import LetKDIntermediateLoss, LetKDLoss, LetKDPenultimateLoss
    assert (LetKDPenultimateLoss.level, LetKDIntermediateLoss.level) == ('penultimate', 'intermediate')
    with pytest.raises(TypeError, match='build LetKDPenultimateLoss .* or LetKDIntermediateLoss'):
        LetKDLoss('out')
    with pytest.raises(TypeError):
        LetKDIntermediateLoss('layer2', temperature=2.0)
    with pytest.raises(ValueError, match="the codewords of 'out' are for the penultimate level"):
        LetKDIntermediateLoss('out').load_codewords(
            {'sections': {'out': dict(level='penultimate', codewords=torch.randn(4, 5))}})


@pytest.mark.parametrize('what, args, error', [
    ('loss', dict(temperature=float('nan')), 'LetKDPenultimateLoss: temperature must be a finite number > 0'),
    ('loss', dict(temperature='2'), None),  # a number written as text is read as the number
    ('loss', dict(loss_weight=-1.0), 'LetKDPenultimateLoss: loss_weight must be a finite number >= 0'),
    ('layer', dict(alpha=-1.0), 'LetKDLayer: alpha must be a finite number >= 0'),
    ('layer', dict(num_codewords=512.5), 'LetKDLayer: in_channels and num_codewords must be whole numbers >= 1'),
])
def test_letkd_hyper_parameters_are_checked_when_built(what, args, error):
    """temperature=nan trained NaN to the end with exit status 0; loss_weight=-1 maximised the KL; a fractional
    codeword count failed inside torch.randn."""
    from kdplug.letkd.layer import LetKDLayer
    from kdplug.letkd.loss import LetKDPenultimateLoss

    def build():
        return LetKDPenultimateLoss('penult', **args) if what == 'loss' else LetKDLayer(**dict(dict(in_channels=64,
                                                                                        num_codewords=512), **args))
    if error is None:
        assert build().temperature == 2.0
        return
    with pytest.raises(ValueError, match=error):
        build()


def test_letkd_with_a_source_without_a_checkpoint_names_checkpoint_teacher_only():
    """The weak head was told "use CheckpointTeacher or EMATeacher", and EMATeacher is refused for letKD too."""
    from mmengine.config import Config

    from kdplug.registry import MODELS
    cfg = Config.fromfile(str(REPO / 'configs' / 'letkd' / 'letkd-2_resnet20_resnet8_4e_cifar10-10k.py'))
    cfg.model.teacher = dict(type='WeakHeadTeacher', position='backbone')
    with pytest.raises(ValueError, match=r"the weak head has none: use teacher=dict\(type='CheckpointTeacher'"):
        MODELS.build(cfg.model)


@pytest.mark.parametrize('config', sorted(p.name for p in (REPO / 'configs' / 'letkd').glob('letkd-2_*.py')
                                          if '4e_cifar10-10k' not in p.name))
def test_letkd_2_configs_put_the_intermediate_layer_after_the_first_block_of_the_last_stage(config):
    """Where the authors' code puts it (adagorgun/letKD-framework, classification_subclass_quest_value.py lines
    151-171 with which_stage = the last stage): after its first block, for the student's layer and the teacher's
    features alike; the layer's width is the last stage's (a layer of the wrong width fails at its first forward)."""
    from mmengine.config import Config
    from kdplug.tasks.classification import ClassificationTask
    cfg = Config.fromfile(str(REPO / 'configs' / 'letkd' / config))
    position = cfg.model.losses.letkd_inter.student_module
    task = ClassificationTask()
    student = task.build_model(task.model_config(cfg.model.student.to_dict()), 'student').train()
    inner = student.backbone.backbone
    last = [name for name, child in inner.named_children() if name.startswith(('layer', 'block'))][-1]
    blocks = dict(inner.named_modules())[last]
    first = next(name for name, _ in blocks.named_modules() if name and name.split('.')[-1] == '0')
    assert position == f'{last}.{first}' and cfg.model.losses.letkd_inter.get('teacher_stage') in (None, position)
    size = 64 if 'tiny-imagenet' in config else 32
    student.extract_feat(torch.randn(2, 3, size, size))
    assert student.backbone.module_at(position).assignment_logits.shape[1] == cfg.model.student.backbone.modules[
        position].num_codewords
