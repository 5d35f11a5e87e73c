"""The codeword geometry of letKD (Görgün, Gürbüz and Alatan, "Knowledge Distillation Layer that Lets the Student
Decide", BMVC 2023, arXiv:2309.02843; supplement Alg. 1-2), torch only: squared distances and nearest centers (in
chunks of rows, bounded memory), k-means (k-means++ then Lloyd) for the penultimate codewords, LDA then per-class
k-means sub-classes, the nearest sub-class of a feature's own class (``k*``) and the sub-class score matrix ``s_T``
for the intermediate level. :mod:`kdplug.letkd.fitting` fits with it offline; :mod:`kdplug.letkd.loss` assigns
with it online.

Choices where the supplement is silent (docs/letkd.md, "Choices the supplement leaves open"; the authors' code is
adagorgun/letKD-framework, commit 4fb2289):

* Sub-class scores ``s_T`` ("NNSearch(F_LDA, prot)"): for every training feature, ``h1`` is its nearest prototype
  among its class's sub-classes and ``h2`` its nearest prototype among ALL sub-classes (hard nearest-neighbour
  search); row ``h1`` of ``s_T`` is the empirical distribution ``p(h2 | h1)`` (the supplement's Fig. 2 caption:
  ``p_T(i) = p(h2(z_i) | h1(z_i, y))``). A sub-class with no feature gets a one-hot row on itself. The authors'
  ``apply_NNCenter`` (``distillation/algorithms/subclass_decision/subclass_utils.py`` lines 307-344) computes the
  same frequencies, with rows indexed by each feature's own-class k-means label instead of its nearest own-class
  prototype (the two coincide at k-means convergence).
* ``k*`` online is the nearest prototype of the image's class, as the authors'
  (``valueLayer_subclass.py`` lines 188-202); a position whose class has no prototype at all (a class absent from
  the fitting data) falls back to the nearest prototype of any class.
* LDA: within-class covariance with a ridge ``1e-6 * trace / D`` (numerical safety for dead channels),
  ``min(C - 1, D)`` components, scaled to unit within-class variance (as scikit-learn's ``transform``,
  ``x -> W (x - mean)``, i.e. ``b = -W mean``).
* A class with fewer training vectors than K_inter gets fewer sub-classes (``valid`` marks the prototypes that
  exist).
"""
import time
import warnings
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

#: A progress callback (one line of text), or None.
Log = Optional[Callable[[str], None]]


def _chunk_rows(num_centers: int, budget: int = 1 << 24) -> int:
    return max(1, budget // max(1, num_centers))


def squared_distances(x: Tensor, centers: Tensor) -> Tensor:
    """||x_i - c_k||^2, (n, k), clamped at 0."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centers.t() + (centers * centers).sum(1)
    return d.clamp_min_(0)


def nearest(x: Tensor, centers: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Index and squared distance of the nearest center of each row of ``x``, in chunks of rows (bounded memory).
    ``mask`` (k,) bool: only these centers are candidates."""
    idx = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    step = _chunk_rows(centers.shape[0])
    for start in range(0, x.shape[0], step):
        d = squared_distances(x[start:start + step], centers)
        if mask is not None:
            d[:, ~mask] = float('inf')
        dist[start:start + step], idx[start:start + step] = d.min(1)
    return idx, dist


def assign_subclasses(z: Tensor, labels: Tensor, prototypes: Tensor, valid: Tensor, k: int) -> Tensor:
    """``k*`` of Alg. 2: the nearest valid prototype among the sub-classes of each row's class (rows of a class
    without prototypes: the nearest valid prototype of any class). Returns indices into the C*k prototypes."""
    labels = labels.long()
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    step = _chunk_rows(prototypes.shape[0])
    own = torch.arange(prototypes.shape[0], device=z.device) // k
    for start in range(0, z.shape[0], step):
        d = squared_distances(z[start:start + step], prototypes)
        d[:, ~valid] = float('inf')
        own_d = torch.where(own.unsqueeze(0) == labels[start:start + step].unsqueeze(1), d,
                            torch.full_like(d, float('inf')))
        dist, idx = own_d.min(1)
        fallback = torch.isinf(dist)
        if fallback.any():
            idx[fallback] = d[fallback].argmin(1)
        out[start:start + step] = idx
    return out


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
