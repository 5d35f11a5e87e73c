"""Deliberately naive reference implementations of kdplug's logit losses, for the tests only.

Written from the papers' formulas (NormKD, Chi et al., arXiv:2308.00520, sections 3.2-3.3; NKD, Yang et al., ICCV
2023, arXiv:2303.13005), NOT from kdplug's code, and importing nothing from kdplug. Everything is float64 numpy, one
sample at a time: a plain Python loop over the rows, each row handled as a 1-D array. No batching tricks, no shared
helpers with the library.

Every ``*_per_sample`` function takes student logits ``s`` and teacher logits ``t`` as (N, C) array-likes (numpy
arrays, torch tensors or nested lists; converted to float64) and returns a numpy float64 array of shape (N,). The
matching ``*_loss`` function returns the batch loss: the plain mean over samples of the per-sample values.
"""
import math

import numpy as np


# --------------------------------------------------------------------------------------------------------------
# 1-D building blocks
# --------------------------------------------------------------------------------------------------------------

def _rows(x):
    """(N, C) float64 numpy array from a numpy array, a torch tensor (any dtype/device) or nested lists."""
    if hasattr(x, 'detach'):  # torch tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    x = np.array(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f'expected (N, C) logits, got shape {x.shape}')
    return x


def _labels(y, n):
    """Hard labels as a list of n Python ints."""
    if hasattr(y, 'detach'):
        y = y.detach().cpu().numpy()
    y = [int(v) for v in np.asarray(y).reshape(-1)]
    if len(y) != n:
        raise ValueError(f'{len(y)} labels for {n} samples')
    return y


def log_softmax_1d(x):
    """log softmax of one row (1-D float64): x - max - log(sum(exp(x - max)))."""
    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(x))
    return x - m - math.log(float(np.sum(np.exp(x - m))))


def softmax_1d(x):
    return np.exp(log_softmax_1d(x))


def kl_1d(p, q):
    """KL(p || q) = sum_k p_k (log p_k - log q_k) of two probability vectors; terms with p_k = 0 count 0."""
    total = 0.0
    for pk, qk in zip(p, q):
        pk, qk = float(pk), float(qk)
        if pk > 0.0:
            total += pk * (math.log(pk) - math.log(qk))
    return total


def kl_from_logs_1d(log_p, log_q):
    """KL(p || q) from log-probabilities (avoids log(0) for tiny probabilities)."""
    p = np.exp(log_p)
    return float(np.sum(p * (log_p - log_q)))


def std_unbiased_1d(x):
    """Unbiased (C - 1) standard deviation of one row."""
    x = np.asarray(x, dtype=np.float64)
    c = x.shape[0]
    mean = float(np.sum(x)) / c
    return math.sqrt(float(np.sum((x - mean) ** 2)) / (c - 1))


def drop_index_1d(x, y):
    """The row without its column y (C - 1 values, order kept)."""
    return np.concatenate([x[:y], x[y + 1:]])


# --------------------------------------------------------------------------------------------------------------
# Logit transforms
# --------------------------------------------------------------------------------------------------------------

def zscore(x, eps=1e-7):
    """Logit standardization, row by row: (x - mean) / (std_unbiased + eps)."""
    x = _rows(x)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        row = x[i]
        mean = float(np.sum(row)) / row.shape[0]
        out[i] = (row - mean) / (std_unbiased_1d(row) + eps)
    return out


def l2(x, eps=1e-12):
    """L2-normalised logits, row by row: x / (||x||_2 + eps)."""
    x = _rows(x)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        row = x[i]
        out[i] = row / (math.sqrt(float(np.sum(row * row))) + eps)
    return out


def batch_mean(per_sample):
    """The batch loss: mean over samples."""
    per_sample = np.asarray(per_sample, dtype=np.float64)
    return float(np.sum(per_sample)) / max(per_sample.shape[0], 1)


# --------------------------------------------------------------------------------------------------------------
# KD and NormKD
# --------------------------------------------------------------------------------------------------------------

def kd_per_sample(s, t, T=4.0):
    """T^2 * KL(softmax(t / T) || softmax(s / T)) per sample."""
    s, t = _rows(s), _rows(t)
    out = np.zeros(s.shape[0])
    for i in range(s.shape[0]):
        log_pt = log_softmax_1d(t[i] / T)
        log_ps = log_softmax_1d(s[i] / T)
        out[i] = T * T * kl_from_logs_1d(log_pt, log_ps)
    return out


def kd_loss(s, t, T=4.0):
    return batch_mean(kd_per_sample(s, t, T))


def normkd_temperatures(s, t, t_norm=2.0):
    """(T_s, T_t) lists: t_norm * unbiased std of each row (no centring needed, no eps)."""
    s, t = _rows(s), _rows(t)
    ts = [t_norm * std_unbiased_1d(s[i]) for i in range(s.shape[0])]
    tt = [t_norm * std_unbiased_1d(t[i]) for i in range(t.shape[0])]
    return ts, tt


def normkd_per_sample(s, t, t_norm=2.0):
    """T_t^2 * KL(softmax(t / T_t) || softmax(s / T_s)), per-sample T_s = t_norm*std(s_i), T_t = t_norm*std(t_i)."""
    s, t = _rows(s), _rows(t)
    ts, tt = normkd_temperatures(s, t, t_norm)
    out = np.zeros(s.shape[0])
    for i in range(s.shape[0]):
        log_pt = log_softmax_1d(t[i] / tt[i])
        log_ps = log_softmax_1d(s[i] / ts[i])
        out[i] = tt[i] ** 2 * kl_from_logs_1d(log_pt, log_ps)
    return out


def normkd_loss(s, t, t_norm=2.0):
    return batch_mean(normkd_per_sample(s, t, t_norm))


# --------------------------------------------------------------------------------------------------------------
# DKD (and NormKD + DKD)
# --------------------------------------------------------------------------------------------------------------

def _dkd_row(s_row, t_row, y, T_s, T_t, alpha, beta):
    """T_t^2 * (alpha * TCKD + beta * NCKD) for one sample, student scaled by 1/T_s and teacher by 1/T_t."""
    # Binary split (p_y, 1 - p_y); 1 - p_y is computed as the sum of the non-target probabilities (same value,
    # no cancellation for confident rows).
    p_s = softmax_1d(s_row / T_s)
    p_t = softmax_1d(t_row / T_t)
    b_s = [float(p_s[y]), float(np.sum(drop_index_1d(p_s, y)))]
    b_t = [float(p_t[y]), float(np.sum(drop_index_1d(p_t, y)))]
    tckd = kl_1d(b_t, b_s)
    # Non-target: softmax of the C - 1 non-target logits only.
    log_hat_s = log_softmax_1d(drop_index_1d(s_row, y) / T_s)
    log_hat_t = log_softmax_1d(drop_index_1d(t_row, y) / T_t)
    nckd = kl_from_logs_1d(log_hat_t, log_hat_s)
    return T_t * T_t * (alpha * tckd + beta * nckd)


def dkd_per_sample(s, t, y, T=4.0, alpha=1.0, beta=8.0):
    s, t = _rows(s), _rows(t)
    y = _labels(y, s.shape[0])
    return np.array([_dkd_row(s[i], t[i], y[i], T, T, alpha, beta) for i in range(s.shape[0])], dtype=np.float64)


def dkd_loss(s, t, y, T=4.0, alpha=1.0, beta=8.0):
    return batch_mean(dkd_per_sample(s, t, y, T, alpha, beta))


def normkd_dkd_per_sample(s, t, y, t_norm=2.0, alpha=1.0, beta=8.0):
    """DKD with NormKD's per-sample temperatures (student / T_s, teacher / T_t), weighted by T_t^2."""
    s, t = _rows(s), _rows(t)
    y = _labels(y, s.shape[0])
    ts, tt = normkd_temperatures(s, t, t_norm)
    return np.array([_dkd_row(s[i], t[i], y[i], ts[i], tt[i], alpha, beta) for i in range(s.shape[0])],
                    dtype=np.float64)


def normkd_dkd_loss(s, t, y, t_norm=2.0, alpha=1.0, beta=8.0):
    return batch_mean(normkd_dkd_per_sample(s, t, y, t_norm, alpha, beta))


# --------------------------------------------------------------------------------------------------------------
# NKD
# --------------------------------------------------------------------------------------------------------------

def nkd_per_sample(s, t, y, T=1.0, gamma=1.5):
    """-p_t(y) log p_s(y) (T = 1) + gamma * T^2 * (-sum_k Tn_k log Sn_k) over the non-target logits at T."""
    s, t = _rows(s), _rows(t)
    y = _labels(y, s.shape[0])
    out = np.zeros(s.shape[0])
    for i in range(s.shape[0]):
        yi = y[i]
        p_t = softmax_1d(t[i])
        log_p_s = log_softmax_1d(s[i])
        target_term = -float(p_t[yi]) * float(log_p_s[yi])
        tn = softmax_1d(drop_index_1d(t[i], yi) / T)
        log_sn = log_softmax_1d(drop_index_1d(s[i], yi) / T)
        non_target = -float(np.sum(tn * log_sn))
        out[i] = target_term + gamma * T * T * non_target
    return out


def nkd_loss(s, t, y, T=1.0, gamma=1.5):
    return batch_mean(nkd_per_sample(s, t, y, T, gamma))


# --------------------------------------------------------------------------------------------------------------
# Multi-temperature KD
# --------------------------------------------------------------------------------------------------------------

def multi_temp_kd_per_sample(s, t, temperatures=tuple(range(1, 15))):
    """max(set)^2 * KL(mean_j softmax(t / t_j) || mean_j softmax(s / t_j))."""
    s, t = _rows(s), _rows(t)
    temps = [float(v) for v in temperatures]
    k = len(temps)
    out = np.zeros(s.shape[0])
    for i in range(s.shape[0]):
        avg_s = np.zeros(s.shape[1])
        avg_t = np.zeros(t.shape[1])
        for tj in temps:
            avg_s = avg_s + softmax_1d(s[i] / tj)
            avg_t = avg_t + softmax_1d(t[i] / tj)
        avg_s = avg_s / k
        avg_t = avg_t / k
        out[i] = max(temps) ** 2 * kl_1d(avg_t, avg_s)
    return out


def multi_temp_kd_loss(s, t, temperatures=tuple(range(1, 15))):
    return batch_mean(multi_temp_kd_per_sample(s, t, temperatures))
