"""Listing a folder: which files are pictures and videos, which symlinks lead nowhere, and what
else is there.

One walk per folder and scan does it all. It follows symlinks and stops at folder loops, as
CocoIndex's own walk does, and it lists the image-named symlinks that lead nowhere (loops,
missing targets) with the files: left out, such a file would be missing from the index without a
word, so the indexer records why each is not indexed, and the record goes away with the link.
Everything that is not a picture or a video is counted, by extension, for the status page.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from core.media.library import extension, is_media_name, kind_of


class MediaFileMatcher:
    """What the live watcher reports: pictures, videos, `.xmp` sidecars and JSON files (a changed
    `.xmp` or Google Takeout JSON re-reads its picture), in any case; hidden files and folders
    (.thumbnails, ._IMG.jpg, the .part files of copy tools) are left out."""

    def is_dir_included(self, path: PurePath) -> bool:
        return not path.name.startswith(".")

    def is_file_included(self, path: PurePath) -> bool:
        name = path.name
        return not name.startswith(".") and (is_media_name(name) or extension(name) in ("xmp", "json"))


@dataclass
class FolderScan:
    files: list[str] = field(default_factory=list)  # pictures and videos, '/'-separated, relative
    sidecars: int = 0  # known companions that are never indexed: .xmp, .aae, Thumbs.db, ...
    skipped: Counter[str] = field(default_factory=Counter)  # everything else, by ".ext"


def scan_folder(root: Path, note: Callable[[bytes], object] | None = None) -> FolderScan:
    """Walk `root`: its media files (dead symlinks with media names included) and a count of the rest.

    With `note`, every file's path, size, times and inode go to it as it is found
    (sidecars and unknown files too: a changed `.xmp` changes its picture's row), in an order that
    depends only on the folder's contents: `flows.unchanged` fingerprints the folder with it."""
    scan = FolderScan()
    try:
        top = root.stat()
    except OSError:
        return scan
    # (folder, its path relative to root, the folders above it): a link back to any of those is a loop
    pending: list[tuple[Path, PurePath, frozenset[tuple[int, int]]]] = [
        (root, PurePath(), frozenset({(top.st_dev, top.st_ino)}))
    ]
    while pending:
        folder, rel_folder, above = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = rel_folder / entry.name
            try:
                if entry.is_dir():  # follows symlinks
                    st = entry.stat()
                    ident = (st.st_dev, st.st_ino)
                    if ident not in above:
                        pending.append((Path(entry.path), rel, above | {ident}))
                    continue
                is_file = entry.is_file()
            except OSError:
                is_file = False
            if note is not None:
                note(_identity(rel, entry))
            kind = kind_of(entry.name)
            if kind in ("picture", "raw", "video"):
                if is_file or unreachable_link_reason(Path(entry.path)) is not None:
                    scan.files.append(rel.as_posix())
            elif kind == "sidecar":
                scan.sidecars += 1
            elif is_file:
                scan.skipped[f".{extension(entry.name)}" if extension(entry.name) else "(no extension)"] += 1
    return scan


def _identity(rel: PurePath, entry: os.DirEntry[str]) -> bytes:
    try:
        st = entry.stat()  # the target, for a symlink
    except OSError:
        try:
            st = entry.stat(follow_symlinks=False)  # a dead link: its own
        except OSError:
            return f"{rel.as_posix()}\0gone\n".encode()
    return f"{rel.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode()


def unreachable_link_reason(path: Path) -> str | None:
    """Why a symlink cannot be followed to a file, or None when it can (or is no symlink)."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if not os.path.islink(path):
            return None
        if exc.errno == errno.ELOOP:
            return "symlink loop: the link leads back to itself, so there is no file to index"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "symlink to a file that does not exist: nothing to index"
        return f"symlink that cannot be followed ({exc.strerror or exc})"
