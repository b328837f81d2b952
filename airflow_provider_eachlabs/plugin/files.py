"""Reading a file a task recorded, only where the DAG let the task write: inside its ``output_path``.

The path in XCom is a claim, not an address: it is decoded and normalised, then it must be the
``output_path`` itself or a plainly named file directly inside it, and it is opened from the DAG's
folder, never from the recorded string. Locally the file is opened relative to the folder without
following a symbolic link and without blocking (a FIFO answers at once), and must be a regular file
within the size limit. On object storage the URI must name the ``output_path``'s own scheme, bucket
and connection, so XCom cannot choose credentials. A refusal is decided before the disk is touched,
so it says nothing about what exists outside the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote, urlsplit

from airflow_provider_eachlabs.storage import check_file_stem


class Refused(ValueError):
    """A recorded path the api-server will not read; the message says which rule it broke."""


@dataclass(frozen=True)
class _Place:
    """A file to read: a folder the DAG named and a plain name in it."""

    folder: str
    name: str
    local: bool


def read_inside(recorded: str, output_path: str, limit: int) -> bytes:
    """The whole file, refused past ``limit`` bytes."""
    with open_inside(recorded, output_path, limit) as handle:
        content = handle.read(limit + 1)
    if len(content) > limit:
        raise ValueError(f"larger than the {limit} byte limit")
    return bytes(content)


@contextlib.contextmanager
def open_inside(recorded: str, output_path: str, limit: int | None = None) -> Iterator[IO[bytes]]:
    """A binary handle on the recorded file, once it is found inside ``output_path``; with ``limit``,
    a larger file is refused before it is read."""
    place = place_inside(recorded, output_path)
    if not place.local:
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(f"{place.folder}/{place.name}")
        if limit is not None and int(path.stat().st_size) > limit:
            raise ValueError(f"larger than the {limit} byte limit")
        with path.open("rb") as handle:  # type: ignore[no-untyped-call]
            yield handle
        return
    with _open_local(place, limit) as handle:
        yield handle


def place_inside(recorded: str, output_path: str) -> _Place:
    """Where ``recorded`` lies inside ``output_path``, or ``Refused`` saying why it does not."""
    if not isinstance(recorded, str) or not recorded or "\x00" in recorded:
        raise Refused("the recorded path is not a path")
    if _is_local(output_path) != _is_local(recorded):
        raise Refused(f"{_short(recorded)} is not inside the task's output_path {output_path}")
    if _is_local(output_path):
        root, wanted = _local(output_path), _local(recorded)
        folder, name = _within(os.path.abspath(root), os.path.abspath(wanted), recorded, output_path)
        return _Place(folder, name, local=True)
    out, got = urlsplit(output_path), urlsplit(recorded)
    if (got.scheme, got.netloc) != (out.scheme, out.netloc) or got.query or got.fragment:
        raise Refused(
            f"{_short(recorded)} names another store, bucket or connection than the task's output_path"
        )
    if "%" in got.path or "\\" in got.path:
        raise Refused(f"{_short(recorded)} has escaped characters; output names are plain")
    folder, name = _within(out.path or "/", got.path, recorded, output_path)
    return _Place(f"{out.scheme}://{out.netloc}{folder.rstrip('/')}", name, local=False)


def _within(root: str, wanted: str, recorded: str, output_path: str) -> tuple[str, str]:
    """(folder, name): the output_path file itself, or a plain name directly inside the folder."""
    root_n, wanted_n = posixpath.normpath(root), posixpath.normpath(wanted)
    if wanted_n == root_n and not output_path.endswith("/"):
        folder, name = posixpath.split(root_n)
        return folder or "/", name
    folder, name = posixpath.split(wanted_n)
    if folder == root_n and check_file_stem(name) and ".." not in wanted.split("/"):
        return folder, name
    raise Refused(f"{_short(recorded)} is not inside the task's output_path {output_path}")


@contextlib.contextmanager
def _open_local(place: _Place, limit: int | None) -> Iterator[IO[bytes]]:
    folder_fd = os.open(place.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(
                place.name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=folder_fd,
            )
        except OSError as error:
            if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise Refused(f"{place.name} is a symbolic link; only regular files are shown") from None
            raise
    finally:
        os.close(folder_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{place.name} is not a regular file")
        if limit is not None and info.st_size > limit:
            raise ValueError(f"larger than the {limit} byte limit")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def _is_local(path: str) -> bool:
    return "://" not in path or urlsplit(path).scheme == "file"


def _local(path: str) -> str:
    """A local path from a path or ``file://`` URI, percent-decoded before any check."""
    if "://" not in path:
        return os.path.expanduser(path)
    parts = urlsplit(path)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise Refused(f"{_short(path)} is not a plain local file:// URI")
    return unquote(parts.path)


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."
