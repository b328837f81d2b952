"""A batch's items: a list given to the operator, or a JSONL or CSV manifest read as a stream.

A manifest may hold a hundred thousand lines, so it is never loaded whole: items are yielded one at a
time, and the operator reads the manifest once to check every item before anything is bought and
once more to upload and plan them. Each item has a key (its own ``key``, else its position) that
names its output file, so keys must be plain file names and unique within the batch.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_eachlabs.batch.folder import open_binary
from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.storage import FILE_STEM_RULE, check_file_stem, reason

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv")


@dataclass(frozen=True)
class BatchItem:
    """One item: where it came from (for error messages), its key and its own fields."""

    where: str
    key: str
    fields: dict[str, Any]

    def field_name(self, field: str) -> str:
        """How an error names one of this item's fields: ``item 'a' (line 8) steps``."""
        return f"item {self.key!r} ({self.where}) {field}"


def iter_items(items: Sequence[Any] | None, items_path: str | None) -> Iterator[BatchItem]:
    """The items of ``items`` or of the manifest at ``items_path`` (exactly one is given), in order."""
    if (items is None) == (items_path is None):
        raise EachlabsInputError("items", items, "give exactly one of items and items_path")
    if items is not None:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise EachlabsInputError("items", items, "must be a list of objects (one per item)")
        for position, raw in enumerate(items):
            yield _item(raw, position, f"items[{position}]")
        return
    assert items_path is not None
    for position, (where, raw) in enumerate(_manifest_rows(str(items_path))):
        yield _item(raw, position, where)


def _item(raw: Any, position: int, where: str) -> BatchItem:
    if not isinstance(raw, Mapping):
        raise EachlabsInputError(where, raw, "must be an object of the item's fields")
    fields = {str(name): value for name, value in raw.items() if name != "key"}
    key = raw.get("key")
    key = str(position) if key is None or key == "" else str(key)
    if not check_file_stem(key):
        raise EachlabsInputError(f"{where} key", key, f"names the item's output file, so it {FILE_STEM_RULE}")
    return BatchItem(where, key, fields)


def _manifest_rows(path: str) -> Iterator[tuple[str, Any]]:
    suffix = Path(urlsplit(path).path).suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise EachlabsInputError("items_path", path, f"must end in {', '.join(MANIFEST_SUFFIXES)}")
    with _open_text(path) as handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            for row in reader:  # empty cells are fields left to the operator's defaults
                yield f"line {reader.line_num}", {k: v for k, v in row.items() if v not in (None, "")}
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise EachlabsInputError(
                    f"items_path line {number}", line.strip(), f"is not JSON ({error})"
                ) from None
            yield f"line {number}", row


def _open_text(path: str) -> IO[str]:
    """A text stream of a local, ``file://`` or object-storage manifest, read in chunks."""
    try:
        parts = urlsplit(path)
        if "://" not in path or parts.scheme == "file":
            local = Path(unquote(parts.path) if parts.scheme == "file" else path).expanduser()
            return local.open("r", encoding="utf-8", newline="")
        return io.TextIOWrapper(open_binary(path, "rb"), encoding="utf-8", newline="")
    except FileNotFoundError:
        raise EachlabsInputError("items_path", path, "no file exists at this path") from None
    except Exception as error:
        raise EachlabsInputError("items_path", path, f"cannot be read ({reason(error)})") from None
