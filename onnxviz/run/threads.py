"""numpy's BLAS on one thread: onnxviz's own threads (render's painters, ONNX Runtime's) are its
parallelism, and OpenBLAS's threads beside them only contend for the same cores."""
from __future__ import annotations

import contextlib

_BLAS: list = []  # threadpoolctl's controller, made once: making one reads the loaded libraries


def one_blas_thread():
    """BLAS on one thread while the block runs. The factorization's products are small (positions x
    channels x parts): OpenBLAS's threads cost more than they give, 7.9x on 2 busy cores (4096 x 32,
    5 parts, 50 sweeps: 0.13 s against 1.01 s). The limit is the process's, not the thread's: render
    holds it for its whole run, so that its threads entering and leaving their own blocks cannot
    lift it for one another (benchmarks/RESULTS.md 29)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency; without it BLAS keeps its threads
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")
