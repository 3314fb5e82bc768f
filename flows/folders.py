"""Every IMAGE_DIR folder as one live view for CocoIndex's `mount_each`.

Its items are buckets of files (`bucket_of`): the key is the bucket, the value its files' library
keys (`core.media.library`), sorted; `index_bucket` finds each file through the library, so one view
serves any number of folders. A change to a file re-runs its bucket, whose other files cost a
look each (their facts are remembered).

- A full scan (the first, and the hourly ones) walks every folder (`flows.walk`)
  and records what it found that is not indexed (`core.store.folder_survey`).
- Folders on local disks follow file events. On network mounts (NFS, SMB, FUSE) events do not
  arrive, so those folders are polled every SCAN_INTERVAL: each file's size and mtime against the
  last poll, and only what differs goes to the indexer.
- A change to one file of a group (`flows.pairing`) re-runs the others, so a RAW that appears
  beside its JPEG folds into it, and a changed `.xmp` sidecar or Takeout JSON re-reads its picture.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import cocoindex as coco
from cocoindex.connectors import localfs

from core.media.library import Library, Root, extension, is_media_name
from core.media.takeout import is_json
from core.settings import Settings
from core.store.folder_survey import FolderSurvey
from flows.pairing import Siblings, stem
from flows.walk import MediaFileMatcher, scan_folder

log = logging.getLogger("sightline.indexer")

# what network file systems are called in /proc/mounts (and by psutil on other systems): their
# servers change files without telling this machine's kernel, so no file event ever arrives
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "davfs", "webdav", "sshfs", "lustre"}
)


def filesystem_of(path: Path) -> str:
    """The file system type of the mount holding `path` ('' when it cannot be told)."""
    try:
        import psutil

        mounts = psutil.disk_partitions(all=True)
    except Exception:
        return ""
    best, fstype = "", ""
    target = str(path)
    for mount in mounts:
        point = mount.mountpoint.rstrip("/") or "/"
        inside = target == point or target.startswith(point if point.endswith("/") else point + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, mount.fstype
    return fstype


def watch_mode(path: Path, settings: Settings) -> str:
    if settings.watch == "poll":
        return "polled"
    fstype = filesystem_of(path).lower()
    return "polled" if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse") else "live"


Signature = tuple[int, int]  # (size, mtime_ns)

# About 25 files a bucket at 200,000, 120 at a million. Never change it, nor `bucket_of`: a file's
# rows belong to its bucket's component, and a file moved to another bucket whose old one also
# re-runs in the same update can lose its row (the old bucket's delete may land after the new
# one's insert).
BUCKETS = 8192


def bucket_of(key: str) -> str:
    """The bucket of a library key."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return f"{int.from_bytes(digest, 'big') % BUCKETS:04x}"


def _signatures(root: Root) -> dict[str, Signature]:
    found: dict[str, Signature] = {}
    matcher = MediaFileMatcher()
    for folder, dirs, names in os.walk(root.path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if matcher.is_file_included(PurePosixPath(name)):
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                rel = os.path.relpath(os.path.join(folder, name), root.path).replace(os.sep, "/")
                found[root.key(rel)] = (st.st_size, st.st_mtime_ns)
    return found


class LibraryView:
    def __init__(
        self,
        library: Library,
        modes: dict[str, str],
        scan_interval: float,
        on_survey: Callable[[list[FolderSurvey]], Awaitable[None]],
        *,
        live: bool,
    ) -> None:
        self._library = library
        self._modes = modes
        self._scan_interval = scan_interval
        self._on_survey = on_survey
        self._siblings = Siblings()
        self._subscriber: coco.LiveMapSubscriber[str, tuple[str, ...]] | None = None
        self._buckets: dict[str, set[str]] = {}  # as the last full scan and the events since left them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching: asyncio.Task[Any] | None = None
        # one update (not live) scans once and ends: no watcher to arm, none left running after it
        self._following = live
        self._live = [r for r in library.roots if modes[r.label] == "live"] if live else []
        self._scans_asked = 0
        self._first_scan = asyncio.Event()
        self._readies = 0

    async def __aiter__(self) -> AsyncIterator[tuple[str, tuple[str, ...]]]:
        surveys: list[FolderSurvey] = []
        buckets: dict[str, set[str]] = {}
        for root in self._library.roots:
            scan = await asyncio.to_thread(scan_folder, root.path)
            for rel in scan.files:
                key = root.key(rel)
                buckets.setdefault(bucket_of(key), set()).add(key)
            surveys.append(
                FolderSurvey(
                    root.label,
                    str(root.path),
                    self._modes[root.label],
                    len(scan.files),
                    scan.sidecars,
                    dict(scan.skipped),
                )
            )
        self._buckets = buckets
        for bucket in sorted(buckets):
            yield bucket, tuple(sorted(buckets[bucket]))
        await self._on_survey(surveys)

    async def watch(self, subscriber: coco.LiveMapSubscriber[str, tuple[str, ...]]) -> None:
        self._subscriber = subscriber
        self._loop = asyncio.get_running_loop()
        self._watching = asyncio.current_task()
        polled = [r for r in self._library.roots if self._modes[r.label] == "polled" and self._following]
        # the baseline comes before the first scan, so a change made during that scan is seen
        baselines = {r.label: await asyncio.to_thread(_signatures, r) for r in polled}
        tasks = [asyncio.create_task(self._poll(r, baselines[r.label])) for r in polled]
        for root in self._live:
            walk = localfs.walk_dir(root.path, recursive=True, path_matcher=MediaFileMatcher(), live=True)
            tasks.append(asyncio.create_task(walk.items().watch(_RootEvents(self, root))))  # type: ignore[attr-defined]
        try:
            if not self._live:
                await subscriber.update_all()
                await subscriber.mark_ready()
            # a live source never ends by itself (an update that is not live ends at `mark_ready`)
            await asyncio.gather(*tasks, asyncio.get_running_loop().create_future())
        finally:
            for task in tasks:
                task.cancel()
            # each watcher stops its file observer as it ends; an observer left running would
            # deliver events to a closed event loop
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop_watching(self) -> None:
        """End the live watch. Leaving the runtime does not end it, and a watcher that outlives its
        environment would keep reacting to files with errors."""
        if self._loop is not None and self._watching is not None:
            self._loop.call_soon_threadsafe(self._watching.cancel)

    async def full_scan(self) -> None:
        """A folder's watcher asks for a full scan: once armed at start, hourly after. At start the
        one scan waits until every folder's watcher is armed, so no folder misses an event."""
        assert self._subscriber is not None
        if self._first_scan.is_set():
            await self._subscriber.update_all()
            return
        self._scans_asked += 1
        if self._scans_asked == len(self._live):
            await self._subscriber.update_all()
            self._first_scan.set()
        else:
            await self._first_scan.wait()

    async def ready(self) -> None:
        assert self._subscriber is not None
        self._readies += 1
        if self._readies == len(self._live):
            await self._subscriber.mark_ready()

    async def _poll(self, root: Root, last: dict[str, Signature]) -> None:
        while True:
            await asyncio.sleep(self._scan_interval)
            now = await asyncio.to_thread(_signatures, root)
            gone = sorted(set(last) - set(now))
            changed = [key for key, signature in sorted(now.items()) if last.get(key) != signature]
            if gone or changed:
                await self._rerun(changed, gone)
            last = now

    async def changed(self, key: str) -> Any:
        return await self._rerun([key], [])

    async def removed(self, key: str) -> Any:
        return await self._rerun([], [key])

    async def _rerun(self, changed: list[str], gone: list[str]) -> Any:
        """Re-run the buckets of files that changed or went, then those of the files they group
        with; returns the handle of the last bucket of the first kind (None if none)."""
        assert self._subscriber is not None
        touched: dict[str, None] = {}
        for keys, there in ((changed, True), (gone, False)):
            for key in keys:
                if is_media_name(PurePosixPath(key).name):
                    bucket = bucket_of(key)
                    files = self._buckets.setdefault(bucket, set())
                    files.add(key) if there else files.discard(key)
                    touched[bucket] = None
        handle = None
        for bucket in touched:
            handle = await self._mount(bucket)
        regrouped: dict[str, None] = {}
        for key in (*changed, *gone):
            for sibling in self._grouped_with(key):
                bucket = bucket_of(sibling)
                if bucket not in touched and self._buckets.get(bucket):
                    regrouped[bucket] = None
        for bucket in regrouped:
            await (await self._mount(bucket)).ready()
        return handle

    async def _mount(self, bucket: str) -> Any:
        assert self._subscriber is not None
        files = self._buckets.get(bucket)
        if files:
            return await self._subscriber.update(bucket, tuple(sorted(files)))
        self._buckets.pop(bucket, None)
        return await self._subscriber.delete(bucket)

    def _grouped_with(self, key: str) -> list[str]:
        """The keys of the files that `key` groups with: same-stem media, or the pictures of a
        sidecar (an `.xmp`, or a Takeout JSON: those it describes, with their groups)."""
        path = self._library.path_of(key)
        if path is None:
            return []
        name = path.name
        if is_json(name):
            stems = [stem(described) for described in self._siblings.described_by(path)]
        else:
            stems = [stem(name[: -len(".xmp")] if extension(name) == "xmp" else name)]
        siblings = [sibling for s in dict.fromkeys(stems) for sibling in self._siblings.group(path.parent, s).names]
        return [self._library.sibling_key(key, s) for s in siblings if s.casefold() != name.casefold()]


class _RootEvents:
    """What one folder's watcher says, in library keys, to the view."""

    def __init__(self, view: LibraryView, root: Root) -> None:
        self._view = view
        self._root = root

    async def update_all(self) -> None:
        await self._view.full_scan()

    async def mark_ready(self) -> None:
        await self._view.ready()

    async def update(self, rel: str, _file: localfs.File) -> Any:
        return await _Ready.of(await self._view.changed(self._root.key(rel)))

    async def delete(self, rel: str) -> Any:
        return await _Ready.of(await self._view.removed(self._root.key(rel)))


class _Ready:
    """The watcher awaits `handle.ready()` after each event; a sidecar's event has no component of
    its own to wait for (its pictures' were awaited already)."""

    @staticmethod
    async def of(handle: Any) -> Any:
        return handle if handle is not None else _Ready()

    async def ready(self) -> None:
        return None
