"""The folders Sightline indexes, and how a key (the `path` column) leads to a file.

With one folder a key is the path relative to it, as it always was. With several
(`IMAGE_DIR=a:b`) every key starts with its folder's label, the folder's own name made unique
(`Phone/DCIM/IMG_1.HEIC`, `Camera/IMG_1.CR2`), so keys never collide and a folder filter on a
label works like any other folder.

What a name is (a picture, a video, a sidecar, something else) is decided here too, once, for the
indexer's walk, its survey of skipped files and the server alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.media.pictures import IMAGE_EXTENSIONS, RAW_EXTENSIONS
from core.media.videos import VIDEO_EXTENSIONS

# what is not a picture but travels with pictures: edit lists, metadata, thumbnails of the camera
SIDECAR_EXTENSIONS: tuple[str, ...] = ("xmp", "aae", "thm", "json", "lrv")
# files operating systems and photo tools leave in every folder
IGNORED_NAMES: frozenset[str] = frozenset({"thumbs.db", ".ds_store", "desktop.ini", ".picasa.ini", "picasa.ini"})


def extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""


def kind_of(name: str) -> str:
    """`picture`, `raw`, `video`, `sidecar` (known, never indexed, never reported) or `other`."""
    ext = extension(name)
    if name.lower() in IGNORED_NAMES or ext in SIDECAR_EXTENSIONS:
        return "sidecar"
    if ext in RAW_EXTENSIONS:
        return "raw"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "picture"
    return "other"


def is_media_name(name: str) -> bool:
    return kind_of(name) in ("picture", "raw", "video")


@dataclass(frozen=True)
class Root:
    label: str  # "" when it is the only folder
    path: Path  # resolved

    def key(self, rel: str) -> str:
        return f"{self.label}/{rel}" if self.label else rel


@dataclass(frozen=True)
class Library:
    roots: tuple[Root, ...]

    def locate(self, key: str) -> tuple[Root, str] | None:
        """The folder a key belongs to and the path inside it, or None for a key of no folder."""
        if len(self.roots) == 1 and not self.roots[0].label:
            return self.roots[0], key
        label, _, rel = key.partition("/")
        for root in self.roots:
            if root.label == label and rel:
                return root, rel
        return None

    def path_of(self, key: str) -> Path | None:
        """Where the file of `key` is (or was), unresolved."""
        found = self.locate(key)
        return None if found is None else found[0].path / found[1]

    def file(self, key: str) -> Path | None:
        """The file a key names, resolved, or None when it is gone or a symlink leads it outside
        its folder (such a file is never served)."""
        found = self.locate(key)
        if found is None:
            return None
        root, rel = found
        try:
            real = (root.path / rel).resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: Python 3.11's resolve() on a symlink loop
            return None
        return real if real.is_relative_to(root.path) and real.is_file() else None

    def sibling_key(self, key: str, name: str) -> str:
        """The key of `name` in the same folder as `key`."""
        return str(PurePosixPath(key).with_name(name))


def library_of(folders: tuple[Path, ...]) -> Library:
    """Label each folder after its own name; a second folder of the same name gets `-2`, and so on."""
    if len(folders) == 1:
        return Library((Root("", folders[0].resolve()),))
    roots: list[Root] = []
    taken: set[str] = set()
    for folder in folders:
        real = folder.resolve()
        base = real.name or "root"
        label, n = base, 1
        while label in taken:
            n += 1
            label = f"{base}-{n}"
        taken.add(label)
        roots.append(Root(label, real))
    return Library(tuple(roots))
