"""Where render's explanations spend CPU: `onnxviz render ARGS...` with the thread CPU time
(`time.thread_time()`) of each part of `explain.pages` summed over the run.

    python benchmarks/explain_thread_time.py render MODEL.onnx PHOTOS -o OUT

Prints one line: {part: (CPU seconds, calls)} for the explainer's setup, each batch's share
(Grad-CAM and its parts' factorization, made ahead by `ExplainBatch.prepare` or by an image page),
each image's pictures and the run's joint parts. Compare
the process's user + system time with and without `--no-cam --parts 0` for the whole.
"""
from __future__ import annotations

import atexit
import sys
import threading
import time


def main() -> None:
    import onnxviz.explain.pages as pages
    from onnxviz.cli import app

    spent: dict[str, list] = {}
    lock = threading.Lock()

    def timed(owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                with lock:
                    entry = spent.setdefault(label, [0.0, 0])
                    entry[0] += time.thread_time() - start
                    entry[1] += 1

        setattr(owner, name, wrapper)

    R = pages.RenderExplainer
    for owner, name, label in ((R, "__init__", "setup"), (R, "prepare_run", "joint parts, factorized"),
                               (R, "run", "joint parts, pictures"),
                               (R, "_gradcam", "batches: Grad-CAM"),
                               (pages, "factorize_each", "batches: parts, factorized"),
                               (R, "image", "image pages: pictures and entries"),
                               (R, "_cam_entry", "  of which class activation maps' pictures"),
                               (pages, "parts_overlay", "  of which parts' pictures (and the joint's)")):
        timed(owner, name, label)
    atexit.register(lambda: print({k: (round(v[0], 2), v[1]) for k, v in spent.items()}, "(CPU s, calls)"))
    sys.argv = ["onnxviz"] + sys.argv[1:]
    app()


if __name__ == "__main__":
    main()
