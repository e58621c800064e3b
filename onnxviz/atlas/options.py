"""What an atlas run is asked for (`AtlasOptions`), and what its engines report (`EngineRun`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from onnxviz.errors import OptionError
from onnxviz.run.images import RESIZE_MODES

SCORES = ("max", "mean")
ENGINES = ("local", "ray")

Progress = Callable[[int, int, str], None]  # (images done, images to do, name of the last one)


@dataclass
class AtlasOptions:
    layers: list[str] = field(default_factory=list)
    top: int = 9
    score: str = "max"
    batch_size: int = 8
    provider: str = "auto"
    resize: str = "stretch"
    engine: str = "local"
    overlay: bool = False
    checkpoint_every: int = 2000
    tile: int = 64
    # engine "ray"
    ray_address: str | None = None
    workers: int = 2
    worker_cpus: float | None = None
    worker_gpus: float = 0.0
    threads: int | None = None

    def check(self) -> None:
        """Reject bad options before any work starts (messages name the parameters; the CLI, its flags)."""
        if isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1:
            raise OptionError(f"{{top}} must be at least 1 (the number of images kept per channel), got {self.top}",
                              params=("top",))
        for value, valid, param in ((self.score, SCORES, "score"), (self.engine, ENGINES, "engine"),
                                    (self.resize, RESIZE_MODES, "resize")):
            if value not in valid:
                raise OptionError(f"{{{param}}} '{value}' is not valid; choose one of {', '.join(valid)}",
                                  params=(param,))
        for value, param in ((self.batch_size, "batch_size"), (self.checkpoint_every, "checkpoint_every"),
                             (self.workers, "workers")):
            if value < 1:
                raise OptionError(f"{{{param}}} must be at least 1, got {value}", params=(param,))
        if self.engine == "ray" and self.provider == "cuda" and not self.worker_gpus:
            raise OptionError("{provider} cuda with {engine} ray needs a GPU per actor: add {worker_gpus} 1",
                              params=("provider", "engine", "worker_gpus"))
        if not 8 <= self.tile <= 512:
            raise OptionError(f"{{tile}} must be 8..512 pixels, got {self.tile}", params=("tile",))


@dataclass
class RayTimes:
    """Where an `engine="ray"` run's time went: Ray's start, the wait for the first results, and the
    rate once results flowed (Ray Data hands them over a block at a time, so rates between blocks
    mean little: this one is over everything after Ray started, actors' start included)."""

    init_s: float
    first_result_s: float
    after_start_img_s: float


@dataclass
class EngineRun:
    """What an engine reports after its pass: where it ran and, for Ray, where the time went."""

    provider: str  # "cpu", "cuda", or the actors' providers joined by "+"
    fallback: str | None  # why "auto" runs on CPU; None when it is not a fallback
    workers: int
    ray: RayTimes | None = None
