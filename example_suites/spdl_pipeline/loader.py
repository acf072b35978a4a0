"""An image-style training data loader built with SPDL, tuned through ``loader.yaml``.

The pipeline: sample keys (shuffled per epoch) -> fetch from storage (every request pays a
fixed latency) -> decode (deflate + PNG-style un-filtering, NumPy) -> transform (crop, flip,
2x2 mean-pooling, normalisation to float32 CHW) -> batch (stack into one array).

Fetching can be one request per sample or per batch (``fetch.mode``), and decoding with the
transform one task per sample or one task per batch that loops over its samples
(``decode.mode``): a task per sample spreads a batch over threads, at the price of SPDL's
work per task (queues, executor hand-offs, statistics), which is paid with the GIL held.

Decode and transform are real CPU work that releases the GIL (zlib and NumPy), so threads
scale up to the number of cores; fetching is waiting, so it scales with concurrency as long
as there are threads to wait in.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

MEAN = np.array([123.7, 116.3, 103.5], dtype=np.float32)
STD = np.array([58.4, 57.1, 57.4], dtype=np.float32)
_SCALE = (0.25 / STD).astype(np.float32)
_SHIFT = (MEAN / STD).astype(np.float32)

Image = npt.NDArray[Any]


@dataclass(frozen=True)
class LoaderConfig:
    """``loader.yaml``: how the loader runs. None of it changes what it delivers."""

    num_threads: int
    sink_buffer: int
    fetch_mode: str
    fetch_concurrency: int
    decode_mode: str
    decode_concurrency: int
    decode_executor: str
    transform_concurrency: int

    @classmethod
    def load(cls, path: Path) -> LoaderConfig:
        data = yaml.safe_load(path.read_text())

        def get(dotted: str, kind: type, choices: Sequence[Any] = ()) -> Any:
            value: Any = data
            for part in dotted.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise ValueError(f"{path.name}: {dotted}: missing")
                value = value[part]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{path.name}: {dotted}: expected {kind.__name__}, got {value!r}")
            if choices and value not in choices:
                raise ValueError(f"{path.name}: {dotted}: expected one of {choices}, got {value!r}")
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{path.name}: {dotted}: expected at least 1, got {value!r}")
            return value

        return cls(
            num_threads=get("num_threads", int),
            sink_buffer=get("sink_buffer", int),
            fetch_mode=get("fetch.mode", str, ("item", "batch")),
            fetch_concurrency=get("fetch.concurrency", int),
            decode_mode=get("decode.mode", str, ("item", "batch")),
            decode_concurrency=get("decode.concurrency", int),
            decode_executor=get("decode.executor", str, ("thread", "process")),
            transform_concurrency=get("transform.concurrency", int),
        )


class Storage:
    """Files under ``root``, one per key, behind a store that charges ``latency`` per request."""

    def __init__(self, root: Path, latency: float) -> None:
        self.root = root
        self.latency = latency

    def get(self, key: int) -> tuple[int, bytes]:
        time.sleep(self.latency)
        return key, (self.root / f"{key:06d}.bin").read_bytes()

    def get_many(self, keys: Sequence[int]) -> list[tuple[int, bytes]]:
        """One request for many objects (a batched or ranged read): one latency."""
        time.sleep(self.latency)
        return [(key, (self.root / f"{key:06d}.bin").read_bytes()) for key in keys]


@dataclass(frozen=True)
class Shape:
    height: int
    width: int
    channels: int
    crop: int


@dataclass
class Batch:
    keys: npt.NDArray[np.int64]
    images: npt.NDArray[np.float32]
    """``(batch, channels, crop / 2, crop / 2)``, normalised."""


def decode(item: tuple[int, bytes], shape: Shape) -> tuple[int, Image]:
    """Inflate, then undo the horizontal "Sub" filter (a running sum mod 256)."""
    key, payload = item
    raw = np.frombuffer(zlib.decompress(payload), dtype=np.uint8)
    diffs = raw.reshape(shape.height, shape.width, shape.channels)
    return key, np.cumsum(diffs, axis=1, dtype=np.uint8)


def crop_origin(key: int, shape: Shape) -> tuple[int, int, bool]:
    span_y = shape.height - shape.crop + 1
    span_x = shape.width - shape.crop + 1
    return (key * 7919) % span_y, (key * 104729) % span_x, key % 2 == 1


def transform(item: tuple[int, Image], shape: Shape) -> tuple[int, npt.NDArray[np.float32]]:
    """Crop, flip, 2x2 mean-pool and normalise to float32 CHW."""
    key, pixels = item
    top, left, flip = crop_origin(key, shape)
    window = pixels[top : top + shape.crop, left : left + shape.crop]
    if flip:
        window = window[:, ::-1]
    wide = window.astype(np.float32)
    pooled = wide[0::2, 0::2] + wide[1::2, 0::2]
    pooled += wide[0::2, 1::2]
    pooled += wide[1::2, 1::2]
    pooled *= _SCALE
    pooled -= _SHIFT
    return key, np.ascontiguousarray(pooled.transpose(2, 0, 1))


def collate(items: list[tuple[int, npt.NDArray[np.float32]]]) -> Batch:
    keys = np.array([key for key, _ in items], dtype=np.int64)
    return Batch(keys=keys, images=np.stack([image for _, image in items]))


def decode_batch(items: list[tuple[int, bytes]], shape: Shape) -> list[tuple[int, Image]]:
    return [decode(item, shape) for item in items]


def transform_batch(items: list[tuple[int, Image]], shape: Shape) -> Batch:
    return collate([transform(item, shape) for item in items])


def sample_keys(num_samples: int, seed: int, epochs: int | None) -> Iterator[int]:
    """Keys in a fresh permutation every epoch; ``epochs=None`` runs forever."""
    rng = np.random.default_rng(seed)
    for _ in itertools.count() if epochs is None else range(epochs):
        yield from (int(k) for k in rng.permutation(num_samples))


class _Partial:
    """A picklable ``fn(item, shape)`` (a process pool ships the stage function by reference)."""

    def __init__(self, fn: Any, shape: Shape) -> None:
        self.fn = fn
        self.shape = shape
        self.__name__ = fn.__name__

    def __call__(self, item: Any) -> Any:
        return self.fn(item, self.shape)


@contextmanager
def running_loader(
    config: LoaderConfig,
    storage: Storage,
    shape: Shape,
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
    epochs: int | None = 1,
    **build_options: Any,
) -> Iterator[Any]:
    """Build and start the SPDL pipeline that yields :class:`Batch` objects; stop it after.

    ``build_options`` go to ``PipelineBuilder.build`` (e.g. stats hooks and queues).
    """
    from spdl.pipeline import PipelineBuilder

    decode_executor: Executor | None = None
    if config.decode_executor == "process":
        decode_executor = ProcessPoolExecutor(
            max_workers=config.decode_concurrency, mp_context=get_context("spawn")
        )
    builder: PipelineBuilder[Any, Any] = PipelineBuilder()
    builder.add_source(sample_keys(num_samples, seed, epochs))
    fetch_many: Any = storage.get_many
    fetch_one: Any = storage.get
    per_batch = config.decode_mode == "batch"
    if config.fetch_mode == "batch":
        builder.aggregate(batch_size)
        builder.pipe(fetch_many, concurrency=config.fetch_concurrency, name="fetch")
        if not per_batch:
            builder.disaggregate()
    else:
        builder.pipe(fetch_one, concurrency=config.fetch_concurrency, name="fetch")
        if per_batch:
            builder.aggregate(batch_size)
    builder.pipe(
        _Partial(decode_batch if per_batch else decode, shape),
        concurrency=config.decode_concurrency,
        executor=decode_executor,
        name="decode",
    )
    builder.pipe(
        _Partial(transform_batch if per_batch else transform, shape),
        concurrency=config.transform_concurrency,
        name="transform",
    )
    if not per_batch:
        builder.aggregate(batch_size).pipe(collate, name="collate")
    builder.add_sink(config.sink_buffer)
    pipeline = builder.build(num_threads=config.num_threads, **build_options)
    try:
        with pipeline.auto_stop():
            yield pipeline
    finally:
        if decode_executor is not None:
            decode_executor.shutdown(cancel_futures=True)
