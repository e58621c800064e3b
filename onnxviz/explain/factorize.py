"""What a layer sees as a few parts, and where its activations vary most: numpy on the maps.

- `nmf`: non-negative matrix factorization `V ~ W @ H` minimising the Frobenius norm by
  hierarchical alternating least squares (HALS, Cichocki & Phan 2009: each part's row in turn gets
  its exact non-negative least-squares step; accelerated as Gillis & Glineur 2012), started from
  NNDSVDa (Boutsidis & Gallopoulos 2008, zeros filled with the mean of `V`; its SVD randomized with a
  fixed seed), so the result is deterministic. Lee & Seung's multiplicative
  updates from the same start ended up to 3.1% above scikit-learn's error (1.8 to 2.2 times it on a
  16-channel layer), HALS at most 1.4% above it (benchmarks/RESULTS.md 26).
- `factorize_maps`: Deep Feature Factorization (Collins et al. 2018) of a layer's maps: the rows of
  `V` are positions (of every image given, so that parts are shared and keep their colour), the
  columns channels. Negative activations (layers before their ReLU) are set to 0, the part a ReLU
  would keep; the share of the layer's energy that removes is reported.
- `eigen_cam`: the first principal component of one image's positions x channels (Eigen-CAM,
  Muhammad & Yeasin 2020), its sign chosen so that it correlates positively with the sum of the
  channels; a class-agnostic map for models without a classifier head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxviz.errors import OptionError

_BLAS: list = []  # threadpoolctl's controller, made once: making one reads the loaded libraries


def one_blas_thread():
    """BLAS on one thread while the block runs. These products are small (positions x channels x
    parts): OpenBLAS's threads cost more than they give, 7.9x on 2 busy cores (4096 x 32, 5 parts,
    50 sweeps: 0.13 s against 1.01 s), and they would take the cores ONNX Runtime and the painting
    threads use during a render."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency; without it BLAS keeps its threads
        import contextlib

        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


MAX_ITER = 200
TOL = 1e-4  # stop when 10 sweeps improve the relative error by less than this
EPS = 1e-12
OVERSAMPLE, POWER_ITERATIONS = 10, 2  # the randomized SVD of the initialisation
GRAM_SIDE = 64  # up to this many rows or columns, the SVD from the Gram matrix's eigenvectors


def top_singular(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `k` leading singular triplets `(u [n, k], s [k], vt [k, m])` of `v`, deterministic: from the
    eigenvectors of the Gram matrix of its shorter side when that side is short (ResNet50's 49 x 2048
    conv5: 0.5 ms), else by a randomized SVD with a fixed seed (Halko, Martinsson & Tropp 2011, as
    scikit-learn's NNDSVD; VGG16's 3136 x 256 block3_conv3: 8 ms, against 117 ms for the full SVD)."""
    n, m = v.shape
    if min(n, m) <= GRAM_SIDE:
        a = v.astype(np.float64)
        wide = n <= m
        values, vectors = np.linalg.eigh(a @ a.T if wide else a.T @ a)
        order = np.argsort(values)[::-1][:k]
        s = np.sqrt(np.maximum(values[order], 0))
        safe = np.where(s > 0, s, 1.0)
        if wide:
            u = vectors[:, order]
            return u, s, (u.T @ a) / safe[:, None]
        vt = vectors[:, order].T
        return (a @ vt.T) / safe, s, vt
    q = v @ np.random.default_rng(0).standard_normal((m, k + OVERSAMPLE)).astype(v.dtype)
    for _ in range(POWER_ITERATIONS):  # subspace iteration, re-orthonormalised each way
        q = v @ np.linalg.qr(v.T @ np.linalg.qr(q)[0])[0]
    q = np.linalg.qr(q)[0]
    ub, s, vt = np.linalg.svd(q.T @ v, full_matrices=False)
    return (q @ ub)[:, :k], s[:k], vt[:k]


def nndsvda(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD initialisation of `v` [n, m] with `k` parts, zeros replaced by the mean of `v`."""
    u, s, vt = top_singular(v, k)
    w = np.zeros((v.shape[0], k), v.dtype)
    h = np.zeros((k, v.shape[1]), v.dtype)
    w[:, 0] = np.sqrt(s[0]) * np.abs(u[:, 0])
    h[0] = np.sqrt(s[0]) * np.abs(vt[0])
    for j in range(1, k):
        x, y = u[:, j], vt[j]
        xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
        yp, yn = np.maximum(y, 0), np.maximum(-y, 0)
        xpn, ypn, xnn, ynn = (float(np.linalg.norm(a)) for a in (xp, yp, xn, yn))
        mp, mn = xpn * ypn, xnn * ynn
        if mp > mn:
            uu, vv, sigma = xp / max(xpn, EPS), yp / max(ypn, EPS), mp
        else:
            uu, vv, sigma = xn / max(xnn, EPS), yn / max(ynn, EPS), mn
        lbd = np.sqrt(s[j] * sigma)
        w[:, j] = lbd * uu
        h[j] = lbd * vv
    mean = v.mean()
    w[w < EPS] = mean
    h[h < EPS] = mean
    return w, h


def _hals(x: np.ndarray, numerator: np.ndarray, gram: np.ndarray) -> None:
    """One sweep of hierarchical alternating least squares over the rows of `x` [k, m] (in place, rows
    contiguous): row j minimises ||V - W H||_F with the others fixed, clipped at 0. With the rows of
    the Gram matrix and of the numerator divided by its diagonal, row j's step is
    `x_j + (a_j - g_j x) / g_jj = a_j / g_jj - (g_j / g_jj - e_j) x`."""
    diagonal = np.diagonal(gram).copy()
    live = diagonal > EPS  # a part that is zero everywhere keeps its row
    scale = 1.0 / np.where(live, diagonal, 1.0)
    a = numerator * scale[:, None].astype(numerator.dtype)
    g = (gram * scale[:, None]).astype(x.dtype)
    g[np.arange(len(g)), np.arange(len(g))] -= 1
    for j in np.flatnonzero(live):
        np.maximum(a[j] - g[j] @ x, EPS, out=x[j])


def nmf(v: np.ndarray, k: int, max_iter: int = MAX_ITER, tol: float = TOL,
        inner: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    """`(W [n, k], H [k, m], relative error ||V - WH||_F / ||V||_F)` for a non-negative `v` [n, m],
    in float32 (activations are), at most `max_iter` sweeps of `inner` passes over each factor."""
    v = np.ascontiguousarray(v, np.float32)
    with one_blas_thread():
        return _nmf(v, k, max_iter, tol, inner)


def _nmf(v: np.ndarray, k: int, max_iter: int, tol: float, inner: int) -> tuple[np.ndarray, np.ndarray, float]:
    """HALS; with `inner` > 1 accelerated (Gillis & Glineur 2012): each sweep makes the two products
    with V, the costly part, once, and passes `inner` times over each factor with them (k x k and
    k x m work). For a small budget of sweeps: on VGG16's and ResNet50's default layers, 10 sweeps of 3
    end within 1.9% of the error of 200 plain ones, in about half the time of 30 plain ones. Run to
    convergence, plain HALS stays nearer scikit-learn's minimum (MobileNet's 64 x 256 conv_pw_13:
    1.0000x its error, against 1.0201x with 2 or 3 passes): the default."""
    norm = float(np.linalg.norm(v))
    if norm == 0:
        return np.zeros((v.shape[0], k), np.float32), np.zeros((k, v.shape[1]), np.float32), 0.0
    w, h = nndsvda(v, k)
    wt = np.ascontiguousarray(w.T)  # W's columns as rows: each HALS step reads and writes one contiguous row
    previous = None
    for it in range(max_iter):
        wtv, wtw = wt @ v, wt @ wt.T
        for _ in range(inner):
            _hals(h, wtv, wtw)  # H's rows, one at a time, each the exact least-squares step
        hvt, hht = h @ v.T, h @ h.T
        for _ in range(inner):
            _hals(wt, hvt, hht)
        if it % 10 == 9 and it + 1 < max_iter:
            error = _relative_error(v, wt.T, h, norm)
            if previous is not None and previous - error < tol:
                break
            previous = error
    return wt.T, h, _relative_error(v, wt.T, h, norm)


def _relative_error(v: np.ndarray, w: np.ndarray, h: np.ndarray, norm: float) -> float:
    """||V - WH||_F / ||V||_F without forming V - WH: ||V||^2 - 2 tr(H^T W^T V) + tr(W^T W H H^T),
    the small products summed in float64."""
    wtv = (w.T @ v).astype(np.float64)
    wh = h.astype(np.float64)
    squared = norm * norm - 2 * float(np.sum(wtv * wh)) + float(np.sum((w.T.astype(np.float64) @ w) * (wh @ wh.T)))
    return float(np.sqrt(max(squared, 0.0))) / norm


@dataclass
class Parts:
    """A factorization of a layer's maps: `maps` [N, k, h, w] and `channels` [k, C], both >= 0,
    with `positions x channels ~ maps x channels`; parts ordered by their share of the layer."""

    maps: np.ndarray
    channels: np.ndarray
    error: float  # ||V - WH||_F / ||V||_F of the clipped activations
    clipped: float  # share of the layer's squared activations that were negative and set to 0
    zero: bool  # every activation was 0 (or negative): nothing to factorize


def strongest(channels: np.ndarray, part: int, n: int = 5) -> list[int]:
    """The channels that weigh most in `part` of `channels` [k, C], strongest first (weight > 0)."""
    row = channels[part]
    return [int(c) for c in np.argsort(-row, kind="stable")[:n] if row[c] > 0]


def check_parts(parts: object) -> int:
    if isinstance(parts, bool) or not isinstance(parts, (int, np.integer)) or parts < 1:
        raise OptionError(f"{{parts}} must be a positive integer (the number of parts), got {parts!r}",
                          params=("parts",))
    return int(parts)


def factorize_maps(maps: np.ndarray, parts: int, max_iter: int = MAX_ITER, inner: int = 1) -> Parts:
    """NMF of `maps` [N, C, h, w] over the positions of every image at once (at most `max_iter` sweeps
    of `inner` passes, see `nmf`)."""
    parts = check_parts(parts)
    a = np.asarray(maps, np.float32)
    if a.ndim != 4:
        raise OptionError(f"{{maps}} must be [N, C, H, W] feature maps, got shape {list(a.shape)}", params=("maps",))
    n, c, h, w = a.shape
    v = a.transpose(0, 2, 3, 1).reshape(-1, c)
    total = float(np.square(v, dtype=np.float64).sum())
    negative = np.minimum(v, 0)
    clipped = float(np.square(negative, dtype=np.float64).sum()) / total if total > 0 else 0.0
    v = np.maximum(v, 0)
    if parts > min(v.shape):
        raise OptionError(f"{{parts}} is {parts} but the layer has {v.shape[0]} positions and {c} channels; "
                          f"ask for at most {min(v.shape)} parts", params=("parts",))
    if not v.any():
        return Parts(np.zeros((n, parts, h, w), np.float32), np.zeros((parts, c), np.float32), 0.0, clipped, True)
    wm, hm, error = nmf(v, parts, max_iter, inner=inner)
    peak = hm.max(axis=1, keepdims=True)
    peak[peak <= 0] = 1.0
    hm, wm = hm / peak, wm * peak.T  # each part's channel weights peak at 1; its map carries the scale
    order = np.argsort(-wm.sum(axis=0), kind="stable")
    wm, hm = wm[:, order], hm[order]
    out_maps = wm.reshape(n, h, w, parts).transpose(0, 3, 1, 2)
    return Parts(np.ascontiguousarray(out_maps, np.float32), hm.astype(np.float32), error, clipped, False)


def eigen_cam(maps: np.ndarray) -> tuple[np.ndarray, bool]:
    """Eigen-CAM of one image's maps [C, h, w]: `(map [h, w], varies)`; `varies` is False (and the
    map zero) when every position has the same activations."""
    a = np.asarray(maps, np.float64)
    c, h, w = a.shape
    x = a.reshape(c, -1).T
    centred = x - x.mean(axis=0)
    if not np.any(np.abs(centred) > 1e-12 * max(1.0, float(np.abs(x).max()))):
        return np.zeros((h, w), np.float32), False
    with one_blas_thread():
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    total = x.sum(axis=1)
    if float(np.dot(projection - projection.mean(), total - total.mean())) < 0:
        projection = -projection
    return projection.reshape(h, w).astype(np.float32), True
