"""What one version of one file is: read, hash, decode and embed it (its bucket remembers it).

Pictures are read whole and decoded on the file workers. Videos are never read whole: they are
hashed in chunks, and a bounded number of frames is decoded from them as a stream; each frame
goes to the model in the same batches as pictures. The embedding cache, keyed by content hash,
catches renamed and copied files of both kinds.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import cocoindex as coco
import numpy as np

from core.media.library import kind_of
from core.media.pictures import DecodedImage, ImageError, Preprocessing, decode_image
from core.media.places import Gazetteer, Place, place_at
from core.media.takeout import TakeoutFacts, parse_takeout, under_file
from core.media.videos import probe_video, sample_frames
from core.media.xmp import XmpFacts, combined, parse_xmp
from flows.run import RUN, IndexRun, ModelSlot

T = TypeVar("T")
_HASH_CHUNK = 1 << 20


@dataclass
class FileFacts:
    """What describing one version of one file learns (remembered by its bucket, `flows.indexer`)."""

    failure: str | None = None
    kind: str = "picture"  # or "video"
    content_hash: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    taken_at: datetime | None = None
    camera: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    keywords: tuple[str, ...] = ()
    title: str | None = None
    description: str | None = None
    rating: int | None = None
    duration: float | None = None  # videos
    poster_at: float | None = None  # videos: the second of the frame nearest the whole video
    embedding: bytes = b""  # float32; for a video the normalised mean of its frames
    frame_seconds: tuple[float, ...] = ()  # videos: the sampled frames
    frames: bytes = b""  # float32, one embedding per sampled frame


def _yield_to_the_model() -> None:
    """Run this worker thread at a lower priority than the model's threads (Linux sets niceness per
    thread). Reading and decoding then fill the gaps the model leaves instead of preempting its
    threads mid-operation, which stalls every other thread of the forward pass at its next
    barrier; with nothing else to do, the workers run at full speed all the same."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: plain priority


# file reading, hashing and decoding; the model has its own thread (CocoIndex's runner)
FILE_WORKERS = ThreadPoolExecutor(
    max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="sightline-files", initializer=_yield_to_the_model
)


async def in_file_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(FILE_WORKERS, functools.partial(fn, *args, **kwargs))


def _read_and_hash(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# what describing a file yields: a bucket's remembered facts of another version are described again
FACTS_VERSION = 3


@dataclass
class Wanted:
    """A file version to describe for one model."""

    key: str
    path: Path
    known: FileFacts | None = None  # what describing it for another model found: its hash, its header


async def describe(run: IndexRun, slot: ModelSlot, wanted: list[Wanted]) -> list[FileFacts | BaseException]:
    """Read, hash, decode and embed these file versions for `slot`'s model; for each, its facts or
    what it raised. Bad content is a failure in its facts (kept until the file changes); an
    OSError (unreadable right now) is returned, so that nothing is kept and it is retried.

    What is known from another model takes no reading, only the lookup of this model's embedding
    (a model switch, or a second model being built). Where most embeddings are cached (a rebuild,
    a GPU's pass), the bytes, hash and header of all these pictures come in one trip to a file
    worker, then their embeddings in one query; a file the cache misses is read again, decoded
    and embedded alone, as every file is where most embeddings are not cached."""
    run.counters.described += len(wanted)
    out: list[FileFacts | BaseException | None] = [None] * len(wanted)
    alone: list[int] = []
    together: list[int] = []
    for i, item in enumerate(wanted):
        if item.known is not None:
            derived = await _derive(run, slot, item.known)
            if derived is not None:
                out[i] = derived
                continue
        if kind_of(item.path.name) == "picture" and slot.cache.mostly_hits:
            together.append(i)
        else:
            alone.append(i)
    if together:
        prep, max_pixels = slot.embedder.preprocessing, run.settings.max_image_pixels
        looked = await in_file_worker(_look_at_pictures, [wanted[i].path for i in together], prep, max_pixels)
        hashes = [seen[0] if isinstance(seen, tuple) else "" for seen in looked]
        found = await asyncio.gather(*(slot.cache.get(h) for h in hashes if h))
        embeddings = iter(found)
        for i, seen in zip(together, looked):
            if not isinstance(seen, tuple):
                out[i] = seen  # unreadable now
                continue
            digest, header = seen
            embedding = next(embeddings)
            if isinstance(header, ImageError):
                out[i] = FileFacts(failure=str(header))
            elif embedding is None:
                alone.append(i)
            else:
                run.counters.reused += 1
                out[i] = _picture_facts(digest, header, embedding)
    results = await asyncio.gather(*(_describe_one(run, slot, wanted[i].path) for i in alone), return_exceptions=True)
    for i, result in zip(alone, results):
        out[i] = result
    return [r if r is not None else RuntimeError("not described") for r in out]


async def _describe_one(run: IndexRun, slot: ModelSlot, path: Path) -> FileFacts:
    if kind_of(path.name) == "video":
        return await _describe_video(run, slot, path)
    return await _describe_picture(run, slot, path)


async def _derive(run: IndexRun, slot: ModelSlot, known: FileFacts) -> FileFacts | None:
    """This model's facts from another model's, where the embedding cache holds this model's
    embedding of the same content (bad content is bad for every model); None when it does not."""
    if known.failure is not None:
        return known
    if known.kind == "video":
        frames = await slot.cache.get_frames(known.content_hash, slot.embedder.dim)
        if frames is None:
            return None
        run.counters.reused += 1
        return _with_frames(known, *frames)
    embedding = await slot.cache.get(known.content_hash)
    if embedding is None:
        return None
    run.counters.reused += 1
    return replace(known, embedding=embedding.astype(np.float32).tobytes())


def _look_at_pictures(paths: list[Path], prep: Preprocessing, max_pixels: int) -> list[Looked | OSError]:
    """Each file's bytes read and hashed, and its header read, one after another (only one file's
    bytes in memory at a time); or the OSError that reading it raised."""
    out: list[Looked | OSError] = []
    for path in paths:
        try:
            data, digest = _read_and_hash(path)
        except OSError as exc:
            out.append(exc)
            continue
        try:
            out.append((digest, decode_image(data, prep, max_pixels=max_pixels, pixels=False, name=str(path))))
        except ImageError as exc:
            out.append((digest, exc))
    return out


Looked = tuple[str, "DecodedImage | ImageError"]


async def _describe_picture(run: IndexRun, slot: ModelSlot, path: Path) -> FileFacts:
    async with run.reading:  # the bytes are in memory until decoded
        data, digest = await in_file_worker(_read_and_hash, path)
        cached = await slot.cache.get(digest)
        if cached is None:
            run.warm_up(slot.embedder)  # loads while this file decodes; never where all is cached
        try:
            decoded: DecodedImage = await in_file_worker(
                decode_image,
                data,
                slot.embedder.preprocessing,
                max_pixels=run.settings.max_image_pixels,
                pixels=cached is None,
                name=str(path),  # its extension picks RAW decoding; what decoders say is logged under it
            )
        except ImageError as exc:
            return FileFacts(failure=str(exc))
        del data
    if cached is None:
        assert decoded.pixels is not None
        cached = await run.in_flight.finish(_embed_picture(run, slot, digest, decoded.pixels))
        await slot.cache.put(digest, cached)
    else:
        run.counters.reused += 1
    return _picture_facts(digest, decoded, cached)


def _picture_facts(digest: str, decoded: DecodedImage, embedding: np.ndarray) -> FileFacts:
    return FileFacts(
        content_hash=digest,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        taken_at=decoded.taken_at,
        camera=decoded.camera,
        latitude=decoded.latitude,
        longitude=decoded.longitude,
        keywords=tuple(decoded.keywords),
        title=decoded.title,
        description=decoded.description,
        rating=decoded.rating,
        embedding=embedding.astype(np.float32).tobytes(),
    )


async def _describe_video(run: IndexRun, slot: ModelSlot, path: Path) -> FileFacts:
    max_pixels = run.settings.max_image_pixels
    try:
        async with run.reading:  # read as a stream: this bounds the decoders at work
            digest = await in_file_worker(_hash_file, path)
            video = await in_file_worker(probe_video, path, max_pixels=max_pixels)
            cached = await slot.cache.get_frames(digest, slot.embedder.dim)
            if cached is None:
                run.warm_up(slot.embedder)
                prep = slot.embedder.preprocessing
                frames = await in_file_worker(
                    lambda: list(sample_frames(path, prep, max_frames=run.settings.video_frames, max_pixels=max_pixels))
                )
        if cached is None:
            if not frames:
                return FileFacts(failure="video without a frame that can be decoded")
            cached = await run.in_flight.finish(_embed_frames(run, slot, digest, frames))
            await slot.cache.put_frames(digest, *cached)
        else:
            run.counters.reused += 1
    except ImageError as exc:  # VideoError is one
        return FileFacts(failure=str(exc))
    facts = FileFacts(
        kind="video",
        content_hash=digest,
        width=video.width,
        height=video.height,
        format=video.format,
        taken_at=video.created_at,
        camera=video.camera,
        latitude=video.latitude,
        longitude=video.longitude,
        duration=video.duration,
    )
    return _with_frames(facts, *cached)


def _with_frames(facts: FileFacts, seconds: np.ndarray, embeddings: np.ndarray) -> FileFacts:
    """A video's facts with its frames' embeddings: the video's own is their normalised mean, its
    poster the frame nearest that."""
    mean = embeddings.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    poster = int(np.argmax(embeddings @ mean))
    return replace(
        facts,
        poster_at=float(seconds[poster]),
        embedding=mean.astype(np.float32).tobytes(),
        frame_seconds=tuple(float(s) for s in seconds),
        frames=embeddings.astype(np.float32).tobytes(),
    )


async def _embed_picture(run: IndexRun, slot: ModelSlot, digest: str, pixels: np.ndarray) -> np.ndarray:
    """A picture through the model, its embedding kept until the cache has it, even when the
    file's component is cancelled meanwhile (`InFlight.finish`): the model is not asked twice."""
    vector = await run.embed(slot, pixels)
    run.counters.embedded += 1
    slot.cache.keep(digest, vector)
    return vector


async def _embed_frames(
    run: IndexRun, slot: ModelSlot, digest: str, frames: list[tuple[float, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """A video's sampled frames through the model, kept like a picture's embedding."""
    vectors = await asyncio.gather(*(run.embed(slot, pixels) for _, pixels in frames))
    seconds, embeddings = np.array([s for s, _ in frames], dtype=np.float64), np.stack(vectors).astype(np.float32)
    run.counters.embedded += 1
    slot.cache.keep_frames(digest, seconds, embeddings)
    return seconds, embeddings


@coco.fn(memo=True, version=1)
async def video_length(key: str, size: int, mtime_ns: int) -> float | None:
    """A video's length in seconds (None when it cannot be read): whether it is a Live Photo's motion."""
    run = coco.use_context(RUN)
    path = run.library.path_of(key)
    try:
        assert path is not None
        facts = await in_file_worker(probe_video, path, max_pixels=run.settings.max_image_pixels)
    except (ImageError, OSError):
        return None
    return facts.duration


async def _sidecar_bytes(key: str) -> bytes | None:
    """A sidecar's bytes, read on a file worker; None when it cannot be read (any more)."""
    path = coco.use_context(RUN).library.path_of(key)
    try:
        assert path is not None
        return await in_file_worker(path.read_bytes)
    except OSError:
        return None


@coco.fn(memo=True, version=1)
async def read_sidecar(key: str, size: int, mtime_ns: int) -> XmpFacts | None:
    """The facts of an `.xmp` sidecar; unreadable or malformed reads as none."""
    data = await _sidecar_bytes(key)
    return None if data is None else parse_xmp(data)


@coco.fn(memo=True, version=1)
async def read_takeout(key: str, size: int, mtime_ns: int) -> TakeoutFacts | None:
    """The facts of a Google Takeout JSON sidecar; unreadable or not Takeout's reads as none."""
    data = await _sidecar_bytes(key)
    return None if data is None else parse_takeout(data)


def merge_sidecar(facts: FileFacts, sidecar: XmpFacts | None, takeout: TakeoutFacts | None = None) -> XmpFacts:
    """The facts a row shows: the file's own, filled in by its Takeout JSON (`core.media.takeout.under_file`),
    with its `.xmp` sidecar's over them (a sidecar is what the user last wrote in their photo
    tool); keywords from all."""
    own = XmpFacts(
        keywords=facts.keywords,
        title=facts.title,
        description=facts.description,
        rating=facts.rating,
        taken_at=facts.taken_at,
        latitude=facts.latitude,
        longitude=facts.longitude,
    )
    if takeout is not None:
        own = under_file(own, takeout)
    return own if sidecar is None else combined(own, sidecar)


async def place_of(facts: XmpFacts) -> Place | None:
    """Where the row's GPS position is. Not memoised: a lookup takes tens of microseconds, and the
    gazetteer's one load (about a second) runs off the event loop."""
    if facts.latitude is None or facts.longitude is None:
        return None
    if not Gazetteer.loaded():
        await asyncio.to_thread(Gazetteer.shared)
    return place_at(facts.latitude, facts.longitude)
