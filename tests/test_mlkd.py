"""MLKD (Jin, Wang and Lin, "Multi-Level Logit Distillation", CVPR 2023), alone and with logit standardization
(Sun et al., CVPR 2024, arXiv:2403.01427), against formulas written here in float64 numpy loops, independently of
kdplug's code: the authors' computation (Jin-Ying/Multi-Level-Logit-Distillation at 5ee473f,
mdistiller/distillers/KD_ours.py; the LS copy sunshangquan/logit-standardization-KD at f6e5aa5,
mdistiller/distillers/MLKD.py) transcribed term by term, the corrected form, where the two differ, and the two views
through the distiller, from mmpretrain's MultiView pipeline to one training step."""
import copy

import numpy as np
import pytest
import torch

from kdplug.losses.mlkd import WEAK_IN_STRONG, CorrectedMLKDLoss, MLKDLoss, mlkd_terms
from kdplug.registry import MODELS

#: The authors' computation (the reference's faithful=True) and the corrected one, by the reference's flag.
LOSS = {True: MLKDLoss, False: CorrectedMLKDLoss}

TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # after the base temperature, KD_ours lines 115-162


def logits(n=8, c=10, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale


def two_views(n=8, c=10, scale=3.0, seed=0):
    """Student and teacher logits of a weak and a strong view, each (N, C)."""
    return [logits(n, c, scale, seed + k) for k in range(4)]


# -- float64 references: loops over samples, classes and pairs ---------------------------------------------------------
def np_softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def np_zscore(row):
    """The LS authors' normalize (MLKD.py lines 12-15): (x - mean) / (1e-7 + unbiased std)."""
    return (row - row.mean()) / (1e-7 + row.std(ddof=1))


def kd_rows(s, t, T, zscore=False):
    """T^2 KL(softmax(t_i / T) || softmax(s_i / T)) for each sample i (kd_loss with reduce=False)."""
    out = []
    for s_i, t_i in zip(s, t):
        if zscore:
            s_i, t_i = np_zscore(s_i), np_zscore(t_i)
        p, q = np_softmax(t_i / T), np_softmax(s_i / T)
        out.append(T * T * sum(p[c] * (np.log(p[c]) - np.log(q[c])) for c in range(len(p))))
    return np.array(out)


def batch_matrix(s, t, T):
    """bc_loss with reduce=False: ((P_t P_t^T - P_s P_s^T)^2) / N, entry by entry."""
    ps, pt = [np_softmax(x / T) for x in s], [np_softmax(x / T) for x in t]
    n = len(s)
    return np.array([[(sum(pt[a] * pt[b]) - sum(ps[a] * ps[b])) ** 2 / n for b in range(n)] for a in range(n)])


def class_matrix(s, t, T):
    """cc_loss with reduce=False: ((P_t^T P_t - P_s^T P_s)^2) / C, entry by entry."""
    ps, pt = [np_softmax(x / T) for x in s], [np_softmax(x / T) for x in t]
    n, c = len(s), len(s[0])
    gram = [[[sum(p[i][j] * p[i][k] for i in range(n)) for k in range(c)] for j in range(c)] for p in (ps, pt)]
    return np.array([[(gram[1][j][k] - gram[0][j][k]) ** 2 / c for k in range(c)] for j in range(c)])


def masks(t_weak):
    """KD_ours lines 98-111: the less confident half of the samples and of the classes (numpy's median)."""
    probs = np.array([np_softmax(row) for row in t_weak])
    confidence, class_confidence = probs.max(axis=1), probs.sum(axis=0)
    return (confidence <= np.percentile(confidence, 50)).astype(float), \
        (class_confidence <= np.percentile(class_confidence, 50)).astype(float)


def reference(s_w, t_w, s_s=None, t_s=None, T=4.0, zscore=False, faithful=True):
    """Sum of the terms the distiller returns (KD_ours lines 249-254: loss_kd_weak + loss_kd_strong, loss_cc_weak,
    loss_bc_weak), before the loss weight. faithful: the authors' lines transcribed (the reduced loss times the mask,
    then .mean(); the weak logits in the strong T = 2, 6 terms); corrected: the masks on the unreduced terms, with
    the reduced forms' normalisation, the strong logits throughout."""
    s_w, t_w = np.asarray(s_w, np.float64), np.asarray(t_w, np.float64)
    m, k = masks(t_w)
    n, c = s_w.shape
    total = {}
    for j, T_j in enumerate((T,) + TEMPERATURES):
        weak = kd_rows(s_w, t_w, T_j, zscore)
        total['instance', 'weak', j] = np.mean(weak.mean() * m) if faithful else np.mean(weak * m)
        if s_s is not None:
            if faithful and T_j in (2.0, 6.0) and j > 0:  # KD_ours lines 154-162: logits_student_weak, ...
                total['instance', 'strong', j] = weak.mean()
            else:
                total['instance', 'strong', j] = kd_rows(np.asarray(s_s, np.float64), np.asarray(t_s, np.float64),
                                                         T_j, zscore).mean()
        batch, classes = batch_matrix(s_w, t_w, T_j), class_matrix(s_w, t_w, T_j)
        if faithful:
            total['batch', 'weak', j] = np.mean(batch.sum() * m)
            total['class', 'weak', j] = np.mean(classes.sum() * k)
        else:
            total['batch', 'weak', j] = sum(batch[a, b] * m[b] for a in range(n) for b in range(n))
            total['class', 'weak', j] = sum(classes[a, b] * k[b] for a in range(c) for b in range(c))
    return total


def tolerance(weight):
    """float32 against float64: the terms carry T^2 <= 36 times a log-probability error of a few 1e-7."""
    return 1e-5 + 4e-5 * weight


# -- the value ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('faithful', [True, False])
@pytest.mark.parametrize('temperature,logit_norm', [(4.0, None), (2.0, 'zscore'), (1.0, None)])
@pytest.mark.parametrize('n', [8, 7, 13])  # 13 > C = 10: the class term from the C x C Grams, not the N x N ones
def test_two_views_match_the_reference(faithful, temperature, logit_norm, n):
    s_w, t_w, s_s, t_s = two_views(n=n, seed=n)
    loss = LOSS[faithful](temperature=temperature, views=2, logit_norm=logit_norm, loss_weight=0.9)
    value = loss(torch.cat([s_w, s_s]), torch.cat([t_w, t_s]))
    expected = 0.9 * sum(reference(s_w, t_w, s_s, t_s, temperature, logit_norm == 'zscore', faithful).values())
    assert value.item() == pytest.approx(expected, rel=1e-4, abs=tolerance(0.9 * 36))


@pytest.mark.parametrize('faithful', [True, False])
@pytest.mark.parametrize('logit_norm', [None, 'zscore'])
def test_one_view_is_the_weak_views_terms(faithful, logit_norm):
    s, t = logits(seed=20), logits(seed=21)
    value = LOSS[faithful](temperature=3.0, logit_norm=logit_norm)(s, t)
    expected = sum(reference(s, t, T=3.0, zscore=logit_norm == 'zscore', faithful=faithful).values())
    assert value.item() == pytest.approx(expected, rel=1e-4, abs=tolerance(36))


@pytest.mark.parametrize('faithful', [True, False])
@pytest.mark.parametrize('n', [8, 13])
def test_every_term_matches_the_reference(faithful, n):
    s_w, t_w, s_s, t_s = [x.double() for x in two_views(n=n, seed=30)]
    ours = mlkd_terms([s_w, s_s], [t_w, t_s], 4.0, 'zscore', corrected=not faithful)
    expected = reference(s_w, t_w, s_s, t_s, 4.0, True, faithful)
    assert set(ours) == set(expected) and len(ours) == 20
    for key, value in expected.items():
        assert ours[key].item() == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_the_authors_and_the_corrected_terms_differ_exactly_where_the_quirks_are():
    """Quirk 1 (every masked term: instance, batch and class of the weak view) and quirk 2 (the strong instance
    terms at T = 2 and 6); every other term is the same computation."""
    s_w, t_w, s_s, t_s = [x.double() for x in two_views(seed=40)]
    faithful = mlkd_terms([s_w, s_s], [t_w, t_s], 4.0, None)
    corrected = mlkd_terms([s_w, s_s], [t_w, t_s], 4.0, None, corrected=True)
    differ = {key for key in faithful if not torch.isclose(faithful[key], corrected[key], rtol=1e-9, atol=0.0)}
    quirks = {(level, 'weak', j) for level in ('instance', 'batch', 'class') for j in range(5)}
    quirks |= {('instance', 'strong', j) for j in WEAK_IN_STRONG}
    assert differ == quirks
    # quirk 2: the authors' strong T = 2, 6 terms are the weak view's unmasked ones, whatever the strong view
    other = mlkd_terms([s_w, s_s * 2 + 1], [t_w, t_s - 3], 4.0, None)
    for j in WEAK_IN_STRONG:
        assert torch.equal(other['instance', 'strong', j], faithful['instance', 'strong', j])
        assert not torch.isclose(other['instance', 'strong', j - 2], faithful['instance', 'strong', j - 2])
    assert WEAK_IN_STRONG == (3, 4) and (4.0,) + TEMPERATURES == (4.0, 3.0, 5.0, 2.0, 6.0)
    # quirk 1: the mask scales the whole batch's mean by the fraction it keeps (1/2 for an even N without ties)
    weak_mean = mlkd_terms([s_w], [t_w], 4.0, None)
    full = torch.tensor(kd_rows(s_w.numpy(), t_w.numpy(), 4.0).mean(), dtype=torch.float64)
    torch.testing.assert_close(weak_mean['instance', 'weak', 0], 0.5 * full)


@pytest.mark.parametrize('n,c', [(5, 6), (7, 4)])
def test_the_gradient_matches_finite_differences_of_the_reference(n, c):
    s_w, t_w, s_s, t_s = two_views(n=n, c=c, seed=50)
    for faithful in (True, False):
        s = torch.cat([s_w, s_s]).double().requires_grad_()
        loss = LOSS[faithful](temperature=4.0, views=2, logit_norm='zscore')
        loss(s, torch.cat([t_w, t_s]).double()).backward()
        h = 1e-6
        for row, col in [(0, 0), (3, c - 1), (n + 1, 2), (2 * n - 1, c - 2)]:
            def at(delta):
                x = s.detach().clone().numpy()
                x[row, col] += delta
                return sum(reference(x[:n], t_w, x[n:], t_s, 4.0, True, faithful).values())
            numeric = (at(h) - at(-h)) / (2 * h)
            assert s.grad[row, col].item() == pytest.approx(numeric, rel=1e-4, abs=1e-7), (faithful, row, col)


# -- the loss's contract ------------------------------------------------------------------------------------------
def test_teacher_rows_with_weight_zero_leave_every_term():
    """A sample whose weight is 0 in either view (the distiller's non-finite teacher rows) leaves the medians, the
    Gram matrices and the counts: the loss of the remaining samples."""
    s_w, t_w, s_s, t_s = two_views(n=6, seed=60)
    t_s_bad = t_s.clone()
    t_s_bad[2] = 0.0  # as the distiller zeroes a NaN row
    weight = torch.ones(12)
    weight[6 + 2] = 0.0
    keep = torch.tensor([0, 1, 3, 4, 5])
    for faithful in (True, False):
        loss = LOSS[faithful](views=2)
        value = loss(torch.cat([s_w, s_s]), torch.cat([t_w, t_s_bad]), weight=weight)
        expected = loss(torch.cat([s_w[keep], s_s[keep]]), torch.cat([t_w[keep], t_s[keep]]))
        torch.testing.assert_close(value, expected)
    assert MLKDLoss(views=2)(torch.cat([s_w, s_s]), torch.cat([t_w, t_s]), weight=torch.zeros(12)).item() == 0.0


def test_contract_errors_name_the_problem():
    with pytest.raises(ValueError, match=r'stacked along the batch, \(2N, C\) with the weak view first; got 7 rows'):
        MLKDLoss(views=2)(logits(n=7), logits(n=7))
    with pytest.raises(ValueError, match=r'weight of shape \(4,\): the row weights must be one per row, \(8,\)'):
        MLKDLoss(views=2)(logits(), logits(), weight=torch.ones(4))
    with pytest.raises(ValueError, match='check num_classes'):
        MLKDLoss()(logits(c=10), logits(c=12))


@pytest.mark.parametrize('cfg,message', [
    (dict(views=3), 'views=3'),
    (dict(views=True), 'views=True'),
    (dict(temperature=0.0), 'temperature must be a finite number > 0'),
    (dict(temperature=float('nan')), 'temperature must be a finite number'),
    (dict(loss_weight=-1.0), 'loss_weight must be a finite number'),
    (dict(logit_norm='std'), 'logit_norm'),
])
def test_every_hyperparameter_is_validated_at_build(cfg, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(dict(type='MLKDLoss', **cfg))


def test_empty_batch_equal_logits_and_half_precision():
    loss = MLKDLoss(views=2)
    s = torch.zeros(0, 10, requires_grad=True)
    value = loss(s, torch.zeros(0, 10))
    assert value.item() == 0.0 and value.requires_grad
    x = logits(n=16)
    assert loss(x, x.clone()).abs() < 1e-6
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(x.bfloat16().requires_grad_(), logits(n=16, seed=1).bfloat16())
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_zscore_makes_mlkd_ls_instance_terms_invariant_to_shift_and_scale():
    """With the LS authors' placement the z-score reaches the instance terms only: they become invariant to a
    per-sample shift and positive scale, the batch and class terms (raw logits) do not."""
    s_w, t_w, s_s, t_s = [x.double() for x in two_views(seed=70)]
    g = torch.Generator().manual_seed(71)
    a = torch.rand(8, 1, generator=g, dtype=torch.float64) * 3 + 0.5
    b = torch.randn(8, 1, generator=g, dtype=torch.float64)
    base = mlkd_terms([s_w, s_s], [t_w, t_s], 2.0, 'zscore')
    moved = mlkd_terms([s_w * a + b, s_s * a + b], [t_w, t_s], 2.0, 'zscore')
    for key in base:  # up to the 1e-7 added to the std, which the scale does not move
        assert torch.isclose(base[key], moved[key], rtol=1e-6) == (key[0] == 'instance'), key


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('faithful', [True, False])
@pytest.mark.parametrize('logit_norm', [None, 'zscore', 'l2'])
def test_fuzz_two_views_keep_finite_values_and_gradients(dtype, faithful, logit_norm, one_thread):
    """tests/test_nonfinite.py's fuzz (which builds every loss with its defaults: one view) for two views: each fuzz
    case's logits as the weak view, a second draw as the strong one."""
    from test_nonfinite import FUZZ, fuzz_inputs
    loss = LOSS[faithful](views=2, logit_norm=logit_norm, loss_weight=0.9)
    failures = []
    for seed, (n, c, scale, kind) in enumerate(FUZZ):
        s_w, t_w, _ = fuzz_inputs(n, c, scale, kind, dtype, seed)
        s_s, t_s, _ = fuzz_inputs(n, c, scale, 'random', dtype, seed + 1000)
        s = torch.cat([s_w.detach(), s_s.detach()]).requires_grad_()
        value = loss(s, torch.cat([t_w, t_s]))
        value.backward()
        if not torch.isfinite(value) or not torch.isfinite(s.grad.float()).all():
            failures.append(f'N={n} C={c} scale={scale} {kind}: value {value.item()}')
    assert not failures, f'{len(failures)} of {len(FUZZ)}: ' + '; '.join(failures[:5])


# -- in a distiller -------------------------------------------------------------------------------------------------
def two_view_batch(cifar10_root, views=2):
    from test_classification_distill import real_batch
    return real_batch(cifar10_root, 32, views=views)


def distiller(tmp_path, loss_cfg, multiview=True):
    return MODELS.build(distiller_cfg_for(tmp_path, loss_cfg, multiview))


def distiller_cfg_for(tmp_path, loss_cfg, multiview=True):
    from runner_helpers import distiller_cfg, save_teacher
    data_preprocessor = dict(type='mmpretrain.SelfSupDataPreprocessor', mean=[125.307, 122.961, 113.8575],
                             std=[51.5865, 50.847, 51.255], to_rgb=True) if multiview else None
    return distiller_cfg(save_teacher(tmp_path / 'teacher.pth'), losses=loss_cfg,
                         data_preprocessor=data_preprocessor)


def test_the_distiller_gives_the_views_stacked_and_sums_the_students_cross_entropy(tmp_path, cifar10_root,
                                                                                   one_thread):
    from kdplug.tasks.classification import ClassificationTask
    model = distiller(tmp_path, dict(mlkd=dict(type='MLKDLoss', views=2, loss_weight=0.9)))
    model.train()
    data = model.data_preprocessor(two_view_batch(cifar10_root), training=True)
    weak, strong = data['inputs']
    assert weak.shape == strong.shape == (4, 3, 32, 32) and not torch.equal(weak, strong)
    seen = {}
    model.losses['mlkd'].register_forward_pre_hook(  # the distiller's call (its first-step weight check: no grad)
        lambda module, args: seen.update(s=args[0], t=args[1], y=args[2]) if torch.is_grad_enabled() else None)
    losses = model(**data, mode='loss')
    # the loss saw [weak; strong] rows of both models, the labels repeated
    student = copy.deepcopy(model.student)  # the same weights, BatchNorm in training mode: one batch per view
    expected_s = torch.cat([ClassificationTask.logits(copy.deepcopy(student), weak),
                            ClassificationTask.logits(copy.deepcopy(student), strong)])
    torch.testing.assert_close(seen['s'], expected_s)
    with torch.no_grad():
        expected_t = torch.cat([ClassificationTask.logits(model.teacher_model, weak),
                                ClassificationTask.logits(model.teacher_model, strong)])
    torch.testing.assert_close(seen['t'], expected_t)
    assert seen['y'].tolist() == [0, 1, 2, 3] * 2
    # the student's own loss: w_ce (CE(weak) + CE(strong)), as the authors' loss_ce (KD_ours line 114)
    ce = torch.nn.functional.cross_entropy
    target = torch.arange(4)
    torch.testing.assert_close(losses['student.loss'], ce(expected_s[:4], target) + ce(expected_s[4:], target))
    assert torch.isfinite(losses['distill.loss_mlkd'])


def test_views_are_checked_at_build_and_at_the_first_batch(tmp_path, cifar10_root, one_thread):
    from kdplug.tasks.classification import ClassificationTask
    with pytest.raises(ValueError, match='different numbers of views'):
        distiller(tmp_path, dict(mlkd=dict(type='MLKDLoss', views=2), kd=dict(type='KDLoss')))

    class OneViewTask(ClassificationTask):  # a task whose batches bring one view (detection, say)
        max_views = 1
    with pytest.raises(ValueError, match=r'OneViewTask gives its losses 1 view\(s\) of each image, but \[.mlkd.\] '
                                         r'take 2'):
        MODELS.build({**distiller_cfg_for(tmp_path, dict(mlkd=dict(type='MLKDLoss', views=2))),
                      'task': dict(type=OneViewTask)})
    # a single-view pipeline for MLKD(views=2): the error names the transform to add
    model = distiller(tmp_path, dict(mlkd=dict(type='MLKDLoss', views=2)), multiview=False)
    data = model.data_preprocessor(two_view_batch(cifar10_root, views=1), training=True)
    with pytest.raises(ValueError, match=r"take 2 views of every image .* but the batch brings 1: put mmpretrain's "
                                         r"dict\(type='MultiView', num_views=\[1, 1\]"):
        model(**data, mode='loss')
    # a two-view pipeline for losses that take one
    model = distiller(tmp_path, dict(kd=dict(type='KDLoss')))
    data = model.data_preprocessor(two_view_batch(cifar10_root), training=True)
    with pytest.raises(ValueError, match=r'gives 2 views of every image \(a MultiView transform\), but the losses'
                                         r'.*take 1: remove the MultiView transform'):
        model(**data, mode='loss')
    # three views for MLKD(views=2): the fix is two views, not the loss it already has
    model = distiller(tmp_path, dict(mlkd=dict(type='MLKDLoss', views=2)))
    with pytest.raises(ValueError, match=r'gives 3 views .* take 2: give MultiView 2 views \(num_views=\[1, 1\]'):
        model.check_views(3)


def test_classification_preprocessor_and_batch_augments_are_refused_with_two_views(tmp_path, cifar10_root):
    from kdplug.tasks.classification import ClassificationTask
    model = distiller(tmp_path, dict(mlkd=dict(type='MLKDLoss', views=2)), multiview=False)
    batch = two_view_batch(cifar10_root)  # ClsDataPreprocessor stacks the views into one (2, N, 3, H, W) tensor
    with pytest.raises(ValueError, match='ClsDataPreprocessor stacks the views .*SelfSupDataPreprocessor'):
        model(**model.data_preprocessor(batch, training=True), mode='loss')
    student = dict(type='ImageClassifier', train_cfg=dict(augments=dict(type='Mixup', alpha=0.8)))
    with pytest.raises(ValueError, match='takes no batch augments'):
        ClassificationTask().data_preprocessor(dict(type='mmpretrain.SelfSupDataPreprocessor'), student)


def test_a_training_run_through_the_multiview_pipeline(cifar10_root, tmp_path, teacher_checkpoint, one_thread):
    """configs/mlkd's CIFAR-10 config (its MultiView pipeline, RandAugment and Cutout included) on the real images,
    two iterations through mmengine's Runner, validation on one view."""
    from conftest import REPO
    from runner_helpers import classifier_cfg, make_runner, run_config, scalars
    cfg = run_config(cifar10_root, tmp_path, teacher_checkpoint, max_iters=2,
                     config=REPO / 'configs' / 'mlkd' / 'mlkd-ls_resnet56_resnet20_30e_cifar10.py')
    cfg.model.student, cfg.model.teacher.model = classifier_cfg('ResNet8'), classifier_cfg('ResNet20')
    runner = make_runner(cfg)
    seen = []
    runner.model.losses['mlkd'].register_forward_pre_hook(  # the distiller's calls, not its weight check's
        lambda module, args: seen.append(args[0].shape) if torch.is_grad_enabled() else None)
    before = {k: v.clone() for k, v in runner.model.student.state_dict().items()}
    runner.train()
    assert seen == [(16, 10), (16, 10)]  # batch 8, two views
    train = [r for r in scalars(tmp_path) if 'distill.loss_mlkd' in r]
    assert len(train) == 2 and all(np.isfinite([r['distill.loss_mlkd'], r['student.loss']]).all() for r in train)
    assert any('accuracy/top1' in r for r in scalars(tmp_path))
    assert not torch.equal(before['head.fc.weight'], runner.model.student.state_dict()['head.fc.weight'])
