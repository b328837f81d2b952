"""One folder of small files, local or on object storage, for the batch's journal and plan.

Whole files are written atomically (``storage.write_atomically``: a local file is renamed into
place, an object is PUT whole), so a reader never sees half a segment. Large files (the plan) are
written and read as streams. Blocking: the batch runner calls these from its thread pool.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_eachlabs.storage import write_atomically


def open_binary(uri: str, mode: str) -> IO[bytes]:
    """A byte stream of an object-storage URI, through the same filesystem as ``read_bytes`` and
    ``write_bytes``. ``ObjectStoragePath.open`` goes through Airflow's own registry of schemes instead,
    which knows only the providers' (``s3``, ``gs``, ...), so on Airflow 3.3 it refuses ``memory://``
    and any other fsspec scheme that reading and writing whole files accept; there the path wraps a
    plain ``UPath`` (``__wrapped__``, with the connection's filesystem injected) that opens them all.
    """
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri)
    stream: IO[bytes] = getattr(path, "__wrapped__", path).open(mode)
    return stream


class Folder:
    """The files directly inside ``root`` (a local path, ``file://`` or object-storage URI)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        parts = urlsplit(self.root)
        self._local: Path | None = None
        if "://" not in self.root or parts.scheme == "file":
            self._local = Path(unquote(parts.path) if parts.scheme == "file" else self.root).expanduser()

    def _remote(self, name: str | None = None) -> Any:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.root if name is None else f"{self.root}/{name}")

    def names(self) -> list[str]:
        if self._local is not None:
            return [p.name for p in self._local.iterdir() if p.is_file()] if self._local.is_dir() else []
        folder = self._remote()
        if not folder.exists():
            return []
        return [p.name for p in folder.iterdir() if p.is_file()]

    def exists(self, name: str) -> bool:
        if self._local is not None:
            return (self._local / name).is_file()
        return bool(self._remote(name).exists())

    def read(self, name: str) -> bytes:
        if self._local is not None:
            return (self._local / name).read_bytes()
        return bytes(self._remote(name).read_bytes())

    def write(self, name: str, content: bytes) -> None:
        write_atomically(f"{self.root}/{name}", content)

    def delete(self, name: str) -> None:
        if self._local is not None:
            (self._local / name).unlink(missing_ok=True)
        else:
            target = self._remote(name)
            if target.exists():
                target.unlink()

    def remove(self) -> None:
        """The folder and everything in it."""
        if self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)
            return
        for name in self.names():
            self.delete(name)
        with contextlib.suppress(Exception):  # an object store's empty "folder" may not exist at all
            self._remote().rmdir()

    def remove_if_empty(self) -> None:
        """The folder, when nothing is left in it (another task's journal may still be)."""
        if self._local is not None:
            with contextlib.suppress(OSError):
                self._local.rmdir()

    @contextmanager
    def writing(self, name: str) -> Iterator[IO[str]]:
        """A text stream that becomes ``name`` whole when the block ends without an error."""
        if self._local is not None:
            self._local.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self._local)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    yield handle
                os.replace(temporary, self._local / name)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            return
        with (
            open_binary(f"{self.root}/{name}", "wb") as binary,
            io.TextIOWrapper(binary, encoding="utf-8") as handle,
        ):
            yield handle

    def open_text(self, name: str) -> IO[str]:
        """A text stream of ``name``, read in chunks; the caller closes it."""
        if self._local is not None:
            return (self._local / name).open("r", encoding="utf-8")
        return io.TextIOWrapper(open_binary(f"{self.root}/{name}", "rb"), encoding="utf-8")
