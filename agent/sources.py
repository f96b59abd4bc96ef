"""Configured sources, resolved for reading, and how their files are named in records.

A source is a directory tree (or a single file) with include/exclude globs
and a kind. Records carry two names for their file: the event *location*
(its path, as logcollector names a file it reads) and the envelope's
``log_info`` (its key below the source directory, as the aws-s3 wodle names
an S3 object). Both are computed once per file here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from trailwarden.agent.config import SourceConfig, SourceKind
from trailwarden.agent.discovery import Candidate, SourceTree, delivery_time
from trailwarden.agent.envelope import LogOrigin, location_for, origin_for
from trailwarden.common.wire import MAX_LOCATION_CHARS

# What "...<tail of path>" costs when a location is cut to the protocol limit.
_ELLIPSIS: Final = "..."


@dataclass(frozen=True, slots=True)
class Source:
    """One ``[[sources]]`` table, ready to scan."""

    index: int  # position in the configuration, for messages
    kind: SourceKind
    root: str  # the directory whose files are read (a single file's parent)
    only_file: str | None  # set when the configured path is one file
    tree: SourceTree
    bucket: str | None
    max_record_bytes: int
    ignore_older_s: float | None

    def describe(self) -> str:
        return f"sources[{self.index}] ({self.kind.value} {self.only_file or self.root})"

    def single_candidate(self) -> Candidate | None:
        """The configured file, if this source is one file and it exists."""
        path = self.only_file
        assert path is not None
        try:
            st = Path(path).stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        name = Path(path).name
        delivered = delivery_time(name)
        return Candidate(
            path=path,
            root=self.root,
            rel_path=name,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            dev=st.st_dev,
            ino=st.st_ino,
            delivered_at=delivered if delivered is not None else st.st_mtime_ns / 1e9,
        )

    def origin(self, path: str) -> LogOrigin:
        return origin_for(path, self.root, self.bucket)


def resolve_sources(configs: tuple[SourceConfig, ...]) -> list[Source]:
    """Turn configuration tables into sources (paths made absolute)."""
    sources = []
    for index, config in enumerate(configs):
        assert config.path is not None  # load_agent_config checked it
        path = config.path.absolute()
        only_file = None
        root = path
        if path.is_file():
            only_file, root = str(path), path.parent
        sources.append(
            Source(
                index=index,
                kind=config.kind,
                root=str(root),
                only_file=only_file,
                tree=SourceTree(str(root), config.include_globs, config.exclude_globs),
                bucket=config.bucket,
                max_record_bytes=config.max_record_bytes,
                ignore_older_s=config.ignore_older_s,
            )
        )
    return sources


def location_text(path: str) -> tuple[str, int]:
    """The record location for a file, and its size in UTF-8 bytes.

    A path that is not valid UTF-8 (Linux allows any bytes) is shown with
    U+FFFD where its bad bytes are; one beyond the protocol's limit keeps
    its tail, which names the file.
    """
    location = location_for(path)
    try:
        data = location.encode()
    except UnicodeEncodeError:
        location = os.fsencode(path).decode("utf-8", "replace")
        data = location.encode()
    if len(location) > MAX_LOCATION_CHARS:
        location = _ELLIPSIS + location[-(MAX_LOCATION_CHARS - len(_ELLIPSIS)) :]
        data = location.encode()
    return location, len(data)


def parent_directories(path: str, root: str) -> list[str]:
    """``path``'s directory and its ancestors up to and including ``root``."""
    out = []
    directory = Path(path).parent
    while True:
        out.append(str(directory))
        if str(directory) == root or len(str(directory)) <= len(root):
            break
        if directory.parent == directory:
            break
        directory = directory.parent
    if root not in out:
        out.append(root)
    return out
