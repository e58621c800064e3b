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
from onnxviz.run.threads import one_blas_thread

MAX_ITER = 200
TOL = 1e-4  # stop when 10 sweeps improve the relative error by less than this
EPS = 1e-12
OVERSAMPLE, POWER_ITERATIONS = 10, 1  # the randomized SVD of the initialisation (more: the same errors, RESULTS 28)
GRAM_SIDE = 64  # up to this many rows or columns, the SVD from the Gram matrix's eigenvectors


def top_singular(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `k` leading singular triplets `(u [..., n, k], s [..., k], vt [..., k, m])` of each matrix
    of `v` [..., n, m], deterministic: from the eigenvectors of the Gram matrix of its shorter side
    when that side is short (ResNet50's 49 x 2048 conv5: 0.5 ms), else by a randomized SVD with a fixed
    seed (Halko, Martinsson & Tropp 2011, as scikit-learn's NNDSVD; VGG16's 3136 x 256 block3_conv3:
    8 ms, against 117 ms for the full SVD). Each matrix's triplets depend on it alone."""
    n, m = v.shape[-2:]
    if min(n, m) <= GRAM_SIDE:
        a = v.astype(np.float64)
        at = np.swapaxes(a, -1, -2)
        wide = n <= m
        values, vectors = np.linalg.eigh(a @ at if wide else at @ a)
        order = np.argsort(values, axis=-1)[..., ::-1][..., :k]
        s = np.sqrt(np.maximum(np.take_along_axis(values, order, -1), 0))
        safe = np.where(s > 0, s, 1.0)
        top = np.take_along_axis(vectors, order[..., None, :], -1)  # [..., side, k]
        if wide:
            return top, s, (np.swapaxes(top, -1, -2) @ a) / safe[..., :, None]
        return (a @ top) / safe[..., None, :], s, np.swapaxes(top, -1, -2)
    vt_ = np.swapaxes(v, -1, -2)
    q = v @ np.random.default_rng(0).standard_normal((m, k + OVERSAMPLE)).astype(v.dtype)
    for _ in range(POWER_ITERATIONS):  # subspace iteration, re-orthonormalised each way
        q = v @ np.linalg.qr(vt_ @ np.linalg.qr(q)[0])[0]
    q = np.linalg.qr(q)[0]
    ub, s, vt = np.linalg.svd(np.swapaxes(q, -1, -2) @ v, full_matrices=False)
    return (q @ ub)[..., :k], s[..., :k], vt[..., :k, :]


def nndsvda(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """NNDSVD initialisation of each matrix of `v` [..., n, m] with `k` parts: `(W^T [..., k, n],
    H [..., k, m])`, zeros replaced by the mean of the matrix."""
    u, s, vt = top_singular(v, k)
    w = np.zeros(v.shape[:-2] + (k, v.shape[-2]), v.dtype)  # W's columns as rows
    h = np.zeros(v.shape[:-2] + (k, v.shape[-1]), v.dtype)
    w[..., 0, :] = np.sqrt(s[..., :1]) * np.abs(u[..., :, 0])
    h[..., 0, :] = np.sqrt(s[..., :1]) * np.abs(vt[..., 0, :])
    for j in range(1, k):
        x, y = u[..., :, j], vt[..., j, :]
        xp, xn = np.maximum(x, 0), np.maximum(-x, 0)
        yp, yn = np.maximum(y, 0), np.maximum(-y, 0)
        xpn, ypn, xnn, ynn = (np.linalg.norm(a, axis=-1, keepdims=True) for a in (xp, yp, xn, yn))
        positive = xpn * ypn > xnn * ynn  # the side of the singular pair with more weight
        uu = np.where(positive, xp / np.maximum(xpn, EPS), xn / np.maximum(xnn, EPS))
        vv = np.where(positive, yp / np.maximum(ypn, EPS), yn / np.maximum(ynn, EPS))
        lbd = np.sqrt(s[..., j:j + 1] * np.where(positive, xpn * ypn, xnn * ynn))
        w[..., j, :] = lbd * uu
        h[..., j, :] = lbd * vv
    mean = v.mean(axis=(-2, -1), keepdims=True)
    w = np.where(w < EPS, mean, w).astype(v.dtype)
    h = np.where(h < EPS, mean, h).astype(v.dtype)
    return w, h


def _hals(x: np.ndarray, numerator: np.ndarray, gram: np.ndarray, passes: int = 1) -> None:
    """`passes` sweeps of hierarchical alternating least squares over the rows of each `x` [B, k, m]
    (in place): row j minimises ||V - W H||_F with the others fixed, clipped at 0. With the rows of the
    Gram matrix [B, k, k] and of the numerator divided by its diagonal, row j's step is
    `x_j + (a_j - g_j x) / g_jj = a_j / g_jj - (g_j / g_jj - e_j) x`; a part whose diagonal is 0 (zero
    everywhere) keeps its row."""
    k = x.shape[1]
    diagonal = np.diagonal(gram, axis1=1, axis2=2)
    live = diagonal > EPS
    scale = (1.0 / np.where(live, diagonal, 1.0))[:, :, None]
    a = (numerator * scale).astype(x.dtype)
    g = (gram * scale).astype(x.dtype)
    g[:, np.arange(k), np.arange(k)] -= 1
    every = bool(live.all())
    for _ in range(passes):
        for j in range(k):
            row = x[:, j:j + 1]  # [B, 1, m], a view: the step is written in place
            if every:
                np.subtract(a[:, j:j + 1], g[:, j:j + 1] @ x, out=row)
                np.maximum(row, EPS, out=row)
            else:
                step = np.maximum(a[:, j:j + 1] - g[:, j:j + 1] @ x, EPS)
                row[...] = np.where(live[:, j, None, None], step, row)


def nmf(v: np.ndarray, k: int, max_iter: int = MAX_ITER, tol: float = TOL,
        inner: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    """`(W [n, k], H [k, m], relative error ||V - WH||_F / ||V||_F)` for a non-negative `v` [n, m],
    in float32 (activations are), at most `max_iter` sweeps of `inner` passes over each factor."""
    wt, h, error = nmf_each(np.asarray(v)[None], k, max_iter, tol, inner)
    return wt[0].T, h[0], float(error[0])


def nmf_each(v: np.ndarray, k: int, max_iter: int = MAX_ITER, tol: float = TOL,
             inner: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`nmf` of each matrix of `v` [B, n, m] on its own, in one pass of numpy calls over all of them (a
    render's batch: its Python overhead, most of a small layer's cost, paid once):
    `(W^T [B, k, n], H [B, k, m], errors [B])`. Stops when no matrix's error improves by `tol` over
    10 sweeps."""
    v = np.ascontiguousarray(v, np.float32)
    with one_blas_thread():
        return _nmf(v, k, max_iter, tol, inner)


def _nmf(v: np.ndarray, k: int, max_iter: int, tol: float, inner: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HALS; with `inner` > 1 accelerated (Gillis & Glineur 2012): each sweep makes the two products
    with V, the costly part, once, and passes `inner` times over each factor with them (k x k and
    k x m work). For a small budget of sweeps: on VGG16's and ResNet50's layers of at most 28 x 28
    positions, 10 sweeps of 3 end within 0.7% (VGG16) and 9% (ResNet50) of the error of 200 plain
    ones (benchmarks/RESULTS.md 28). Run to convergence, plain HALS stays nearer scikit-learn's
    minimum (MobileNet's 64 x 256 conv_pw_13, tests/explain/test_factorize.py:
    1.0000x its error, against 1.0201x with 2 or 3 passes): the default."""
    b, n, m = v.shape
    norms = np.linalg.norm(v, axis=(1, 2)).astype(np.float64)
    zero = norms == 0
    wt, h = nndsvda(v, k)
    vt = np.swapaxes(v, 1, 2)
    previous = None
    for it in range(max_iter):
        _hals(h, wt @ v, wt @ np.swapaxes(wt, 1, 2), inner)  # H's rows, each the exact least-squares step
        _hals(wt, h @ vt, h @ np.swapaxes(h, 1, 2), inner)
        if it % 10 == 9 and it + 1 < max_iter:
            error = _relative_error(v, wt, h, norms)
            if previous is not None and np.all(previous - error < tol):
                break
            previous = error
    wt[zero], h[zero] = 0, 0
    return wt, h, np.where(zero, 0.0, _relative_error(v, wt, h, norms))


def _relative_error(v: np.ndarray, wt: np.ndarray, h: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """||V - WH||_F / ||V||_F of each matrix without forming V - WH: ||V||^2 - 2 tr(H^T W^T V) +
    tr(W^T W H H^T), the small products summed in float64."""
    wtv = (wt @ v).astype(np.float64)
    hd = h.astype(np.float64)
    wd = wt.astype(np.float64)
    squared = (norms ** 2 - 2 * np.sum(wtv * hd, axis=(1, 2))
               + np.sum((wd @ np.swapaxes(wd, 1, 2)) * (hd @ np.swapaxes(hd, 1, 2)), axis=(1, 2)))
    return np.sqrt(np.maximum(squared, 0.0)) / np.where(norms > 0, norms, 1.0)


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


def _matrix(maps: np.ndarray, parts: int) -> tuple[np.ndarray, float]:
    """`maps` [N, C, h, w] as positions x channels with negative values set to 0, and the share of
    the squared activations that removed."""
    c = maps.shape[1]
    v = maps.transpose(0, 2, 3, 1).reshape(-1, c)
    clipped = 0.0
    if v.min() < 0:  # a layer before its ReLU
        negative = np.minimum(v, 0).ravel()
        total = float(np.dot(v.ravel().astype(np.float64), v.ravel()))
        clipped = float(np.dot(negative.astype(np.float64), negative)) / total
    if parts > min(v.shape):
        raise OptionError(f"{{parts}} is {parts} but the layer has {v.shape[0]} positions and {c} channels; "
                          f"ask for at most {min(v.shape)} parts", params=("parts",))
    return (np.maximum(v, 0) if clipped else np.ascontiguousarray(v)), clipped


def _parts(wt: np.ndarray, hm: np.ndarray, error: float, clipped: float, shape: tuple) -> Parts:
    """The factors of one matrix as `Parts`: each part's channel weights peak at 1 (its map carries the
    scale), parts ordered by their share of the layer."""
    n, c, h, w = shape
    k = hm.shape[0]
    if not hm.any() and not wt.any():
        return Parts(np.zeros((n, k, h, w), np.float32), np.zeros((k, c), np.float32), 0.0, clipped, True)
    peak = hm.max(axis=1, keepdims=True)
    peak[peak <= 0] = 1.0
    hm, wt = hm / peak, wt * peak
    order = np.argsort(-wt.sum(axis=1), kind="stable")
    wt, hm = wt[order], hm[order]
    out_maps = wt.reshape(k, n, h, w).transpose(1, 0, 2, 3)
    return Parts(np.ascontiguousarray(out_maps, np.float32), hm.astype(np.float32), float(error), clipped, False)


def _checked(maps: np.ndarray, parts: int) -> tuple[np.ndarray, int]:
    parts = check_parts(parts)
    a = np.asarray(maps, np.float32)
    if a.ndim != 4:
        raise OptionError(f"{{maps}} must be [N, C, H, W] feature maps, got shape {list(a.shape)}", params=("maps",))
    return a, parts


def factorize_maps(maps: np.ndarray, parts: int, max_iter: int = MAX_ITER, inner: int = 1) -> Parts:
    """NMF of `maps` [N, C, h, w] over the positions of every image at once (at most `max_iter` sweeps
    of `inner` passes, see `nmf`)."""
    a, parts = _checked(maps, parts)
    v, clipped = _matrix(a, parts)
    wt, hm, error = nmf_each(v[None], parts, max_iter, inner=inner)
    return _parts(wt[0], hm[0], error[0], clipped, a.shape)


def factorize_each(maps: np.ndarray, parts: int, max_iter: int = MAX_ITER, inner: int = 1) -> list[Parts]:
    """`factorize_maps` of each image of `maps` [N, C, h, w] on its own (a render's batch), in one pass."""
    a, parts = _checked(maps, parts)
    matrices = [_matrix(a[i:i + 1], parts) for i in range(len(a))]
    wt, hm, errors = nmf_each(np.stack([v for v, _ in matrices]), parts, max_iter, inner=inner)
    return [_parts(wt[i], hm[i], errors[i], clipped, a[i:i + 1].shape) for i, (_, clipped) in enumerate(matrices)]


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
