"""Listing IMAGE_DIR: CocoIndex's folder walk, plus the symlinks that lead nowhere.

CocoIndex's walk follows symlinks, stops at folder loops, and leaves out an entry that is neither a
file nor a folder once followed: a symlink in a loop, or one whose target is missing. Left out,
such a file would be missing from the index without a word. Here it is listed too, so that
`index_file` records why it is not indexed, and the record goes away with the link.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePath

from cocoindex.connectors import localfs


class ImageDirWalker(localfs.DirWalker):
    """`localfs.walk_dir`'s walker with the unreachable symlinks added.

    It extends `DirWalker._walk_sync`, which both the first scan and every live rescan list files
    through (cocoindex 1.0.x); the bad-input tests fail if that stops being so. A link made while
    the watcher runs shows up at the next rescan or start, as the watcher skips what it cannot stat.
    """

    def _walk_sync(self) -> Iterator[localfs.File]:
        yield from super()._walk_sync()
        yield from self._unreachable_links()

    def _unreachable_links(self) -> Iterator[localfs.File]:
        root = self._root_path.resolve()
        matcher = self._path_matcher
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
                    link = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if unreachable_link_reason(Path(entry.path)) is not None:
                    yield localfs.File(self._root_path / rel, _stat=link)


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
