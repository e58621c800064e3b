"""`onnxviz atlas --engine ray`: the same atlas on Ray Data, on this machine or a cluster.

Images are read and resized in Ray tasks; an actor pool runs one ONNX Runtime session per
actor on the reduced model (`plan.make_plan`). Each actor keeps a running top N per
channel and sends back only the entries that enter it: an entry that does not enter one
actor's running top N has N better ones already, so it cannot be in the global top N,
and merging what the actors send (`TopN.offer`) gives exactly the local engine's result.
As the run goes on fewer entries enter, so the traffic to the driver shrinks.

Ray is imported here only, inside functions; `pip install "onnxviz[ray]"` installs it.
"""
from __future__ import annotations

import logging
import math
import socket
import time
from pathlib import Path
from typing import Callable

import numpy as np

from onnxviz.atlas.options import AtlasOptions, EngineRun, Progress, RayTimes
from onnxviz.atlas.plan import Plan, open_reduced
from onnxviz.atlas.state import AtlasState, TopN
from onnxviz.errors import OnnxvizError
from onnxviz.model.graph import reduction_names
from onnxviz.run.images import read_batch
from onnxviz.run.session import usable_cpus

INSTALL = 'pip install "onnxviz[ray]"'
CONNECT_TIMEOUT_S = 5.0
LOCAL_WORKER_CPUS = 0.5  # on one machine, actors that reserve whole CPUs starve the read tasks
READ_CPUS = 0.25  # what a read task reserves; it must differ from the actors' or Ray fuses reads into them
KIND_CANDIDATE, KIND_DONE, KIND_FAILED = 0, 1, 2


def check_ray(address: str | None) -> None:
    """Ray importable, and a cluster address that answers within seconds; else a one-line error."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise OnnxvizError(f"{{engine}} ray needs Ray, which is not installed here: {INSTALL}", params=("engine",)) from None
    if not address or address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise OnnxvizError(f"Ray address '{address}' is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    why = _grpc_answer(host.strip("[]"), int(port), CONNECT_TIMEOUT_S)
    if why:
        raise OnnxvizError(f"Ray address '{address}' does not answer ({why}); start the head there with "
                           f"'ray start --head', or fix {{ray_address}} / RAY_ADDRESS", params=("ray_address",))


# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS on 6379, its
# client server on 10001) answers with a SETTINGS frame at once. A bare TCP accept is not enough:
# a firewall or proxy may accept a connection that nothing will ever answer.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _grpc_answer(host: str, port: int, timeout: float) -> str | None:
    """None when a gRPC server answers at host:port within `timeout` seconds, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_PREFACE)
            head = conn.recv(9)
    except socket.timeout:
        return f"no answer within {timeout:g}s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not head:
        return "it closed the connection: not a Ray head"
    if len(head) < 4 or head[3] != 4:
        return "it is not a Ray (gRPC) server"
    return None


def _read(batch: dict, height: int, width: int, resize: str) -> dict:
    """Ray task: paths -> pixels (zeros and a message where an image cannot be read)."""
    ids = np.asarray(batch["id"], np.int64)
    got = read_batch([str(path) for path in batch["path"]], height, width, resize)
    pixels = np.zeros((len(ids), height, width, 3), np.uint8)
    pixels[got.read] = got.pixels
    errors = np.full(len(ids), "", dtype=object)
    for k, why in got.failed:
        errors[k] = why
    return {"id": ids, "pixels": pixels, "error": errors}


class _Reducer:
    """Ray actor: one ORT session; a running top N per layer; emits the entries that enter it."""

    def __init__(self, model_ref: list, layers: list[str], channels: list[int], top: int, provider: str,
                 threads: int) -> None:
        import ray

        self.session = open_reduced(ray.get(model_ref[0]), provider, threads)
        self.layers = layers
        self.tops = [TopN(c, top) for c in channels]

    def __call__(self, batch: dict) -> dict:
        ids, errors = np.asarray(batch["id"], np.int64), list(batch["error"])
        ok = np.array([not e for e in errors], bool)
        kind, layer, channel, score, image, pos, message = [], [], [], [], [], [], []
        if ok.any():
            outputs = self.session.run(np.asarray(batch["pixels"])[ok])
            for li, (name, top) in enumerate(zip(self.layers, self.tops)):
                s_name, p_name = reduction_names(name)
                top.update(outputs[s_name], outputs[p_name], ids[ok])
                entered = np.isin(top.ids, ids[ok])
                c, r = np.nonzero(entered)
                kind.append(np.full(len(c), KIND_CANDIDATE, np.int8))
                layer.append(np.full(len(c), li, np.int32))
                channel.append(c.astype(np.int32))
                score.append(top.scores[c, r])
                image.append(top.ids[c, r])
                pos.append(top.positions[c, r])
                message.extend([""] * len(c))
        kind.append(np.where(ok, KIND_DONE, KIND_FAILED).astype(np.int8))
        layer.append(np.full(len(ids), -1, np.int32))
        channel.append(np.full(len(ids), -1, np.int32))
        score.append(np.zeros(len(ids), np.float32))
        image.append(ids)
        pos.append(np.zeros(len(ids), np.int64))
        message.extend(e or self.session.provider for e in errors)  # done rows say where they ran
        return {"kind": np.concatenate(kind), "layer": np.concatenate(layer), "channel": np.concatenate(channel),
                "score": np.concatenate(score).astype(np.float32), "image": np.concatenate(image),
                "pos": np.concatenate(pos), "message": np.asarray(message, dtype=object)}


def run_ray(plan: Plan, state: AtlasState, todo: list[tuple[int, str]], options: AtlasOptions,
            checkpoint: Callable[[], None], progress: Progress | None) -> EngineRun:
    """Run `todo` on Ray Data and merge the actors' candidates into `state`."""
    import ray
    import ray.data

    address = options.ray_address or None
    started_here = False
    t0 = time.perf_counter()
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(num_cpus=usable_cpus(), include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=False, object_store_memory=1 << 30)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise OnnxvizError(f"cannot start or join Ray at '{address or 'this machine'}': {' '.join(str(exc).split())}") from exc
        started_here = True
    try:
        return _run(plan, state, todo, options, checkpoint, progress, local=not address, t0=t0)
    finally:
        if started_here:
            ray.shutdown()


def _run(plan: Plan, state: AtlasState, todo: list[tuple[int, str]], options: AtlasOptions,
         checkpoint: Callable[[], None], progress: Progress | None, local: bool, t0: float) -> EngineRun:
    import ray
    import ray.data

    init_s = time.perf_counter() - t0

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own, with images/s
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if not todo:
        return EngineRun(options.provider, None, options.workers)
    cpus = options.worker_cpus if options.worker_cpus is not None else (LOCAL_WORKER_CPUS if local else 1.0)
    threads = options.threads or max(1, round(cpus))
    provider = options.provider if options.worker_gpus > 0 or options.provider == "cpu" else "cpu"
    model_ref = ray.put(plan.reduced)
    per_block = max(options.batch_size, 4 * options.batch_size)
    blocks = max(1, math.ceil(len(todo) / per_block))
    items = ray.data.from_items([{"id": i, "path": p} for i, p in todo], override_num_blocks=blocks)
    h, w = plan.info.height, plan.info.width
    pixels = items.map_batches(_read, batch_size=options.batch_size, batch_format="numpy",
                               num_cpus=READ_CPUS if cpus != READ_CPUS else READ_CPUS / 2,
                               fn_kwargs={"height": h, "width": w, "resize": options.resize})
    reduced = pixels.map_batches(
        _Reducer, batch_size=options.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.workers), num_cpus=cpus, num_gpus=options.worker_gpus,
        max_restarts=0,  # a failing actor is an error to report, not to retry with the same input
        fn_constructor_kwargs={"model_ref": [model_ref], "layers": [layer.name for layer in plan.layers],
                               "channels": [int(layer.shape[1]) for layer in plan.layers], "top": options.top,
                               "provider": provider, "threads": threads})
    done = since = 0
    providers: set[str] = set()
    first = None
    for block in reduced.iter_batches(batch_size=None, batch_format="numpy"):
        if first is None:
            first = time.perf_counter()
        kind = block["kind"]
        cand = kind == KIND_CANDIDATE
        for li, top in enumerate(state.tops):
            sel = cand & (block["layer"] == li)
            if sel.any():
                top.offer(block["channel"][sel], block["score"][sel], block["image"][sel], block["pos"][sel])
        finished = block["image"][kind != KIND_CANDIDATE]
        providers.update(str(m) for m in block["message"][kind == KIND_DONE])
        for k in np.flatnonzero(kind == KIND_FAILED):
            state.failed[int(block["image"][k])] = str(block["message"][k])
        state.done[finished] = 1
        done += len(finished)
        since += len(finished)
        if progress and len(finished):
            progress(done, len(todo), Path(state.images[int(finished[-1])]).name)
        if since >= options.checkpoint_every:
            checkpoint()
            since = 0
    # Ray Data hands results over a block at a time, so rates between blocks mean little:
    # the rate given is over everything after Ray started (actors' start included).
    after = time.perf_counter() - t0 - init_s
    times = RayTimes(init_s, (first - t0) if first is not None else 0.0, done / after if after > 0 else 0.0)
    return EngineRun("+".join(sorted(providers)) or "cpu", None, options.workers, times)
