"""Files that belong together: a RAW beside the JPEG the camera wrote with it, a Live Photo's
still and its motion, a picture and its `.xmp` sidecar or its Google Takeout JSON
(`core.media.takeout`).

Such files make one item. The still (JPEG or HEIC) is what is shown and searched; the RAW is listed
as its original, the short video as its motion. Pairing goes by name within a folder
(`IMG_0001.CR2` + `IMG_0001.JPG`), case aside, as cameras and phones write them.

Every file keeps its own component in the indexer, and each decides from its siblings as they
are now: a RAW or motion with a still beside it declares nothing, and the still lists it. A change
to any file of a group re-runs the others (see `flows.folders`), so adding, removing or renaming
one regroups them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.media.library import extension, kind_of
from core.media.pictures import RAW_EXTENSIONS
from core.media.takeout import MediaNames, is_json

# what a RAW or a Live Photo's motion is paired with, in order of preference
STILLS_FOR_RAW: tuple[str, ...] = ("jpg", "jpeg", "heic", "heif", "hif")  # .HIF: Canon's and Fujifilm's HEIF
STILLS_FOR_MOTION: tuple[str, ...] = ("heic", "heif", "jpg", "jpeg")
MOTION_EXTENSIONS: tuple[str, ...] = ("mov", "mp4")
# Live Photos last about 3 s; a longer video that happens to share a name with a picture (a poster
# frame exported beside a film) is a video of its own, not motion to hide behind the still
LIVE_PHOTO_MAX_SECONDS = 6.0


def stem(name: str) -> str:
    return name.rsplit(".", 1)[0].casefold() if "." in name else name.casefold()


@dataclass(frozen=True)
class Group:
    """The media files of one folder that share a stem, by name."""

    names: tuple[str, ...]

    def with_extension(self, wanted: tuple[str, ...]) -> str | None:
        """The first name whose extension is in `wanted`, in `wanted`'s order of preference."""
        by_ext = {extension(n): n for n in sorted(self.names)}
        return next((by_ext[e] for e in wanted if e in by_ext), None)


class Siblings:
    """Folder listings, cached until the folder's mtime changes (adding, removing or renaming an
    entry changes it), so pairing costs a stat per file, not a listing per file. A listing keeps
    only what pairs (stems shared by several files, sidecars, Takeout JSONs), so thousands of
    folders fit: the indexer visits them in no particular order (`flows.folders.bucket_of`)."""

    def __init__(self, max_folders: int = 8192) -> None:
        self._cache: dict[str, tuple[int, _Listing]] = {}
        self._lock = threading.Lock()
        self._max = max_folders

    def _listing(self, folder: Path) -> _Listing:
        where = str(folder)
        try:
            mtime = os.stat(where).st_mtime_ns
        except OSError:
            return _Listing.EMPTY
        with self._lock:
            cached = self._cache.get(where)
        if cached is None or cached[0] != mtime:
            cached = (mtime, _Listing.of(folder))
            with self._lock:
                if len(self._cache) >= self._max:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[where] = cached
        return cached[1]

    def of(self, path: Path) -> Pairing:
        """What pairs with the media file `path`: its group, its sidecar, its Takeout JSON."""
        listing = self._listing(path.parent)
        name = path.name
        return Pairing(
            group=Group(listing.shared.get(stem(name), (name,))),
            sidecar=listing.sidecar(name),
            takeout=listing.takeout_of(name),
        )

    def group(self, folder: Path, stem_key: str) -> Group:
        """The media files of `folder` whose stem is `stem_key` (see `stem`)."""
        shared = self._listing(folder).shared.get(stem_key)
        if shared is not None:
            return Group(shared)
        try:  # a file alone: listings do not keep those
            names = os.listdir(folder)
        except OSError:
            return Group(())
        return Group(tuple(n for n in names if _is_media(n) and stem(n) == stem_key))

    def sidecar(self, path: Path) -> str | None:
        """The `.xmp` beside a file: `IMG_1.JPG.xmp` (darktable, digiKam) before `IMG_1.xmp`
        (Lightroom, which writes one for a RAW and its JPEG alike)."""
        return self._listing(path.parent).sidecar(path.name)

    def takeout(self, path: Path) -> str | None:
        """The Google Takeout JSON beside a file that describes it (an edited copy, `IMG_1-edited.jpg`,
        shares its original's), or None."""
        return self._listing(path.parent).takeout_of(path.name)

    def described_by(self, json: Path) -> tuple[str, ...]:
        """The media files a Takeout JSON describes, by its name: the one it names and its edited copies."""
        media = self._listing(json.parent).media
        found = media.described_by(json.name)
        return () if found is None else (found, *media.edited_copies(found))


@dataclass(frozen=True)
class Pairing:
    group: Group
    sidecar: str | None
    takeout: str | None


def _is_media(name: str) -> bool:
    return not name.startswith(".") and kind_of(name) in ("picture", "raw", "video")


@dataclass(frozen=True)
class _Listing:
    shared: dict[str, tuple[str, ...]]  # stem → media names, for stems that several files share
    sidecars: dict[str, str]  # casefolded name → name, for .xmp files
    media: MediaNames  # every media file, where Takeout JSONs need them (else none)
    takeout: dict[str, str]  # casefolded media name → the Takeout JSON that describes it

    EMPTY: ClassVar[_Listing]

    @staticmethod
    def of(folder: Path) -> _Listing:
        groups: dict[str, list[str]] = {}
        sidecars: dict[str, str] = {}
        jsons: list[str] = []
        try:
            names = os.listdir(folder)
        except OSError:
            return _Listing.EMPTY
        for name in names:
            if name.startswith("."):
                continue
            if kind_of(name) in ("picture", "raw", "video"):
                groups.setdefault(stem(name), []).append(name)
            elif extension(name) == "xmp":
                sidecars[name.casefold()] = name
            elif is_json(name):
                jsons.append(name)
        # only where a Takeout JSON needs it: matching names to JSONs was most of a listing's cost
        media = MediaNames(n for group in groups.values() for n in group) if jsons else _NO_MEDIA
        takeout: dict[str, str] = {}
        for name in sorted(jsons):  # two JSONs for one file (exports merged): the first by name
            described = media.described_by(name)
            if described is not None:
                takeout.setdefault(described.casefold(), name)
        shared = {k: tuple(sorted(v)) for k, v in groups.items() if len(v) > 1}
        return _Listing(shared, sidecars, media, takeout)

    def sidecar(self, name: str) -> str | None:
        if not self.sidecars:
            return None
        for candidate in (f"{name}.xmp", f"{name.rsplit('.', 1)[0]}.xmp"):
            if candidate.casefold() in self.sidecars:
                return self.sidecars[candidate.casefold()]
        return None

    def takeout_of(self, name: str) -> str | None:
        if not self.takeout:
            return None
        found = self.takeout.get(name.casefold())
        original = self.media.edited_of(name) if found is None else None
        return self.takeout.get(original.casefold()) if original is not None else found


_NO_MEDIA = MediaNames(())
_Listing.EMPTY = _Listing({}, {}, _NO_MEDIA, {})


def still_of(name: str, group: Group, motion_seconds: Callable[[], float | None]) -> str | None:
    """The still a RAW or a motion file belongs to, or None when it is an item of its own.
    `motion_seconds` reads the video's length, only asked for when a still shares its name."""
    kind = kind_of(name)
    if kind == "raw":
        return group.with_extension(STILLS_FOR_RAW)
    if kind == "video" and group.with_extension(MOTION_EXTENSIONS) == name:
        still = group.with_extension(STILLS_FOR_MOTION)
        if still is not None:
            seconds = motion_seconds()
            if seconds is not None and seconds <= LIVE_PHOTO_MAX_SECONDS:
                return still
    return None


@dataclass(frozen=True)
class Companions:
    original: str | None = None  # the RAW this still was developed from
    motion: str | None = None  # a Live Photo's video


def companions_of(name: str, group: Group, motion_seconds: Callable[[str], float | None]) -> Companions:
    """What a still has beside it, by name (the same rules as `still_of`, seen from the still)."""
    if kind_of(name) != "picture":
        return Companions()
    ext = extension(name)
    original = group.with_extension(RAW_EXTENSIONS) if ext in STILLS_FOR_RAW else None
    if original is not None and group.with_extension(STILLS_FOR_RAW) != name:
        original = None  # IMG_1.JPG and IMG_1.HEIC beside IMG_1.CR2: the RAW goes with the JPEG
    motion = None
    if ext in STILLS_FOR_MOTION and group.with_extension(STILLS_FOR_MOTION) == name:
        video = group.with_extension(MOTION_EXTENSIONS)
        seconds = motion_seconds(video) if video is not None else None
        if video is not None and seconds is not None and seconds <= LIVE_PHOTO_MAX_SECONDS:
            motion = video
    return Companions(original=original, motion=motion)
