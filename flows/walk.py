"""Listing IMAGE_DIR: which names are images, and the symlinks that lead nowhere.

CocoIndex's walk follows symlinks, stops at folder loops, and leaves out an entry that is neither a
file nor a folder once followed: a symlink in a loop, or one whose target is missing. Left out,
such a file would be missing from the index without a word. The indexer lists them too (see
`RescannableFolder`), so that `index_file` records why each is not indexed, and the record goes
away with the link. A link made while the watcher runs shows up at the next rescan or start, as
the watcher skips what it cannot stat.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePath

from core.pictures import is_image_name


class ImageFileMatcher:
    """Image extensions in any case; hidden files and folders (.thumbnails, ._IMG.jpg, .part files
    of copy tools) are left out."""

    def is_dir_included(self, path: PurePath) -> bool:
        return not path.name.startswith(".")

    def is_file_included(self, path: PurePath) -> bool:
        return not path.name.startswith(".") and is_image_name(path.name)


def unreachable_links(root: Path, matcher: ImageFileMatcher) -> Iterator[PurePath]:
    """Image-named symlinks under `root` that lead to no file (loops, missing targets), relative."""
    # scandir knows from the directory entry whether a name is a symlink, so the only extra
    # system calls are one stat per symlink; links to folders are not followed, so a folder
    # loop cannot trap this walk
    pending: list[PurePath] = [PurePath()]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(root / folder))
        except OSError:
            continue
        for entry in entries:
            rel = folder / entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if matcher.is_dir_included(rel):
                        pending.append(rel)
                    continue
                if not entry.is_symlink() or not matcher.is_file_included(rel):
                    continue
            except OSError:
                continue
            if unreachable_link_reason(Path(entry.path)) is not None:
                yield rel


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


def count_image_files(root: Path) -> int:
    """How many files a scan will visit (for the progress bar's total)."""
    matcher = ImageFileMatcher()
    total = 0
    for _folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if matcher.is_dir_included(PurePath(d))]
        total += sum(1 for n in names if matcher.is_file_included(PurePath(n)))
    return total
