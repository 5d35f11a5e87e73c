"""The offline codeword math of letKD (Gorgun, Gurbuz and Alatan, "Knowledge Distillation Layer that Lets the
Student Decide", BMVC 2023, arXiv:2309.02843; supplement Alg. 1-2), torch only: k-means (k-means++ then Lloyd)
for the penultimate codewords, LDA then per-class k-means sub-classes and their score matrix for the intermediate
level. Used by tools/fit_codewords.py; the online side (layer, assignments, loss) is
kdplug/models/letkd.py.
"""
import time
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .letkd import Log, assign_subclasses, nearest


def _kmeans_pp(x: Tensor, k: int, generator: torch.Generator, sample: int, log: Log = None) -> Tensor:
    """k-means++ seeding (D^2 sampling) on a random subset of at most ``sample`` rows; ``log`` hears of every tenth
    of the ``k`` picks (K = 4096 takes minutes on a CPU)."""
    n = x.shape[0]
    if n > sample:
        x = x[torch.randperm(n, generator=generator, device=generator.device)[:sample].to(x.device)]
        n = sample
    norms = (x * x).sum(1)

    def distances_to(i: int) -> Tensor:
        # a (n, 1) matrix product: much faster than the matrix-vector product on some CPU builds of torch
        return (norms - 2 * (x @ x[i:i + 1].t()).squeeze(1) + norms[i]).clamp_min_(0)

    first = torch.randint(n, (1, ), generator=generator, device=generator.device).item()
    picks = [first]
    closest = distances_to(first)
    start, report = time.time(), max(1, k // 10)
    for i in range(1, k):
        total = closest.sum()
        # every remaining point coincides with a center: any point will do
        probs = closest / total if total > 0 else torch.ones_like(closest)
        pick = torch.multinomial(probs, 1, generator=generator).item()
        picks.append(pick)
        torch.minimum(closest, distances_to(pick), out=closest)
        if log is not None and k >= 100 and ((i + 1) % report == 0 or i + 1 == k):
            log(f'k-means++ seeding: {i + 1}/{k} centers ({time.time() - start:.0f} s)')
    return x[picks].clone()


def kmeans(x: Tensor, k: int, iters: int = 30, tol: float = 1e-4, seed: int = 0, init: str = 'k-means++',
           init_sample: Optional[int] = None, log: Log = None) -> Tuple[Tensor, Tensor]:
    """k-means of the rows of ``x`` (n, d) on its device: k-means++ seeding (on at most ``init_sample`` rows,
    default ``max(16 k, 4096)``), then Lloyd iterations until the centers move less than ``tol`` times the mean
    variance of the data (scikit-learn's criterion) or ``iters`` iterations. An empty cluster is re-seeded with the
    point farthest from its center. ``k`` larger than n is capped at n with a warning.

    Returns ``(centers (k, d), labels (n,))``, float32 centers.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f'kmeans needs a non-empty (n, d) matrix, got shape {tuple(x.shape)}')
    if init not in ('k-means++', 'random'):
        raise ValueError(f"kmeans init must be 'k-means++' or 'random', got {init!r}")
    x = x.float()
    n = x.shape[0]
    if k > n:
        warnings.warn(f'kmeans: K={k} is larger than the number of feature vectors ({n}); K capped at {n}')
        k = n
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if init == 'random':
        centers = x[torch.randperm(n, generator=generator, device=x.device)[:k]].clone()
    else:
        centers = _kmeans_pp(x, k, generator, init_sample or max(16 * k, 4096), log=log)
    threshold = tol * x.var(0, unbiased=False).mean().item()
    start = time.time()
    for it in range(iters):
        labels, dist = nearest(x, centers)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        new = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):  # re-seed empty clusters with the points worst served by their centers
            far = dist.topk(len(empty)).indices
            new[empty] = x[far]
            dist[far] = 0
        shift = ((new - centers) ** 2).sum().item()
        centers = new
        if log is not None:
            log(f'k-means K={k}, n={n}: iteration {it + 1}/{iters} ({time.time() - start:.0f} s), mean squared '
                f'distance {dist.mean().item():.5g}, center shift {shift:.3g}'
                + (f', {len(empty)} empty clusters re-seeded' if len(empty) else ''))
        if shift <= threshold:
            break
    labels, _ = nearest(x, centers)
    return centers, labels


def fit_lda(x: Tensor, labels: Tensor, num_classes: int, n_components: Optional[int] = None,
            shrinkage: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """Linear discriminant analysis of the rows of ``x`` (n, d) with integer ``labels`` (n,).

    Solves ``S_b v = lambda S_w v`` (between- and within-class covariances, the latter shrunk by
    ``shrinkage * trace(S_w) / d``), keeps the ``n_components`` (default ``min(C - 1, d)``, C the classes present)
    directions of largest ratio, scaled to unit within-class variance, sign fixed (largest coefficient positive).
    Computed in float64. Returns ``(weight (m, d), bias (m,))`` float32 with ``z = x @ weight.T + bias``
    (= ``weight @ (x - mean)``, the projection of scikit-learn's ``transform``).
    """
    x = x.double()
    n, d = x.shape
    labels = labels.long()
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    num_present = int(present.sum())
    if num_present < 2:
        raise ValueError(f'LDA needs features of at least 2 classes, got {num_present}')
    means = torch.zeros(num_classes, d, dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    means = means / counts.clamp_min(1).unsqueeze(1)
    mean = x.mean(0)
    centred = x - means[labels]
    s_w = centred.t() @ centred / max(n - num_present, 1)
    diff = (means - mean)[present]
    s_b = (diff * counts[present].unsqueeze(1)).t() @ diff / n
    ridge = shrinkage * s_w.diagonal().sum() / d
    s_w = s_w + (ridge if ridge > 0 else 1e-12) * torch.eye(d, dtype=x.dtype, device=x.device)
    chol = torch.linalg.cholesky(s_w)
    a = torch.linalg.solve_triangular(chol, s_b, upper=False)
    a = torch.linalg.solve_triangular(chol, a.t(), upper=False)  # L^-1 S_b L^-T (symmetric)
    evals, evecs = torch.linalg.eigh((a + a.t()) / 2)
    order = evals.argsort(descending=True)
    m = min(n_components or num_present - 1, d)
    vecs = torch.linalg.solve_triangular(chol.t(), evecs[:, order[:m]], upper=True)  # L^-T U: V^T S_w V = I
    signs = torch.sign(vecs.gather(0, vecs.abs().argmax(0, keepdim=True)))
    weight = (vecs * signs).t()
    return weight.float(), (-weight @ mean).float()


def fit_subclasses(z: Tensor, labels: Tensor, num_classes: int, k: int, iters: int = 30, seed: int = 0,
                   log: Log = None) -> Tuple[Tensor, Tensor]:
    """Per-class k-means of the (LDA) features ``z`` (n, m): ``k`` sub-classes per class, prototype
    ``c * k + j`` the mean of the features of class c in sub-class j. A class with fewer than k features gets that
    many sub-classes, one with none gets none: ``valid`` (C*k,) bool marks the prototypes that exist.

    Returns ``(prototypes (C*k, m), valid (C*k,))``.
    """
    prototypes = torch.zeros(num_classes * k, z.shape[1], device=z.device)
    valid = torch.zeros(num_classes * k, dtype=torch.bool, device=z.device)
    labels = labels.long()
    for c in range(num_classes):
        members = z[labels == c]
        if len(members) == 0:
            continue
        kc = min(k, len(members))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the cap to kc is intended here
            centers, _ = kmeans(members, kc, iters=iters, seed=seed + c)
        prototypes[c * k:c * k + kc] = centers
        valid[c * k:c * k + kc] = True
        if log is not None and (c + 1) % max(1, num_classes // 10) == 0:
            log(f'sub-classes: class {c + 1}/{num_classes} ({len(members)} vectors, {kc} sub-classes)')
    missing = num_classes - int(valid.view(num_classes, k).any(1).sum())
    if missing:
        warnings.warn(f'{missing} of {num_classes} classes have no feature vectors: they get no sub-class '
                      '(use more images)')
    return prototypes, valid


def subclass_scores(z: Tensor, labels: Tensor, prototypes: Tensor, valid: Tensor, k: int) -> Tensor:
    """``s_T`` of Alg. 2 (C*k x C*k): row ``h1`` is the distribution of the nearest prototype of any class
    (``h2``) over the features assigned to sub-class ``h1`` within their class; one-hot on itself for a sub-class
    without features."""
    size = prototypes.shape[0]
    h1 = assign_subclasses(z, labels, prototypes, valid, k)
    h2, _ = nearest(z.float(), prototypes, mask=valid)
    counts = torch.zeros(size * size, device=z.device).index_add_(
        0, h1 * size + h2, torch.ones(len(h1), device=z.device)).view(size, size)
    totals = counts.sum(1, keepdim=True)
    eye = torch.eye(size, device=z.device)
    return torch.where(totals > 0, counts / totals.clamp_min(1), eye)


# ------------------------------------------------------------------------------------------- teacher targets
