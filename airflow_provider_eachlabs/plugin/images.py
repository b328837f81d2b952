"""The before | mask | after images of a task instance, fetched only where the DAG allows.

There is no open proxy here. The task's XCom says which input URLs it sent and where it stored its
output, but it is display data: a URL is fetched through the hook's download on the DAG's own
Eachlabs connection, with the operator's rules (public https or the API host, no key, checked
redirects, the size cap), sent once; a stored file is read only inside the task's rendered
``output_path`` (``files.py``). A stored output is preferred to its URL: it outlives the API's
delivery URL. Why an image is not shown is said in the provider's own words.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from airflow_provider_eachlabs.exceptions import EachlabsError
from airflow_provider_eachlabs.imageinfo import MAX_DECODE_PIXELS, is_whole_image, read_image_info
from airflow_provider_eachlabs.plugin.files import read_inside
from airflow_provider_eachlabs.plugin.live import call_at_once, in_words, page_hook
from airflow_provider_eachlabs.plugin.records import TaskView
from airflow_provider_eachlabs.settings import MAX_OUTPUT_BYTES

KINDS = ("before", "mask", "after")
THUMBNAIL_SIDE = 320
_THUMBNAILS_KEPT = 256


@dataclass(frozen=True)
class Picture:
    content: bytes
    content_type: str


class Unavailable(Exception):
    """No source of the image could be read; the message says which were tried and why."""


def picture(view: TaskView, kind: str, *, thumbnail: bool = False) -> Picture:
    """The image of ``kind`` for the task, from the first of its recorded sources that can be read."""
    key = (view.dag_id, view.run_id, view.task_id, view.map_index, view.try_number, kind)
    if thumbnail and (kept := _thumbnails.get(key)) is not None:
        return kept
    reasons: list[str] = []
    for label, load in _sources(view, kind):
        try:
            found = _checked(load())
        except Exception as error:
            reasons.append(f"{label}: {_why(error)}")
            continue
        if not thumbnail:
            return found
        small = _thumbnail(found)
        _thumbnails.put(key, small)
        return small
    raise Unavailable("; ".join(reasons) or _nothing_recorded(view, kind))


def unrecorded(view: TaskView, kind: str) -> str | None:
    """Why the image cannot be shown when the task recorded no source for it, so the page can say so
    in place of the image without a request that is bound to fail."""
    return None if _sources(view, kind) else _nothing_recorded(view, kind)


def _sources(view: TaskView, kind: str) -> list[tuple[str, Callable[[], bytes]]]:
    """(what it is, how to read it) for each place the task recorded for this image, best first."""
    sources: list[tuple[str, Callable[[], bytes]]] = []
    if kind == "after":
        if view.stored_path:
            stored = view.stored_path
            sources.append((f"the stored output {stored}", lambda: _read_stored(view, stored)))
        if view.output_url:
            url = view.output_url
            sources.append((f"the output URL {url}", lambda: _download(view, url)))
        return sources
    sent = view.input.get("image" if kind == "before" else "mask")
    if isinstance(sent, str) and sent:
        sources.append((f"the {kind} image as sent, {sent}", lambda: _download(view, sent)))
    return sources


def _nothing_recorded(view: TaskView, kind: str) -> str:
    if not view.prediction_id:
        return "this task has no Eachlabs prediction"
    if kind == "mask" and view.input and "mask" not in view.input:
        return "no mask was sent: the image's alpha channel marked the region"
    if kind == "after" and not view.outcome:
        if view.state == "failed":
            return (
                "the task stopped before its prediction finished (a task marked failed while it waits "
                "cancels its prediction)"
            )
        return "the prediction has no output yet"
    if kind == "after" and view.outcome.get("ok") is False:
        status = view.outcome.get("status")
        if status in ("failed", "cancelled"):
            return f"the prediction {status}, so it has no output"
        return "the task failed before it recorded an output"
    return f"the task recorded no {kind} image"


def _download(view: TaskView, url: str) -> bytes:
    """A recorded URL, fetched on the DAG's own connection (never one XCom names), sent once."""
    conn_id = view.authority.conn_id
    if conn_id is None:
        raise Unavailable(view.authority.unknown or "the task names no Eachlabs connection")
    return bytes(call_at_once(lambda: page_hook(conn_id).download(url, MAX_OUTPUT_BYTES).content))


def _read_stored(view: TaskView, path: str, staged: bool = False) -> bytes:
    """At most ``MAX_OUTPUT_BYTES`` of the stored output, found inside the task's ``output_path``; a
    batch output staged for review (``staged``) inside that task instance's staging folder there."""
    folder = view.authority.output_path
    if folder is None:
        raise Unavailable(view.authority.unknown or "the task has no output_path")
    return read_inside(path, staging_folder(view, folder) if staged else folder, MAX_OUTPUT_BYTES)


def staging_folder(view: TaskView, output_path: str) -> str:
    """Where the batch task instance of ``view`` stages outputs for review: derived here from the DAG's
    ``output_path`` and the task's identity, never from what the task recorded."""
    from airflow_provider_eachlabs.batch.journal import journal_root
    from airflow_provider_eachlabs.review import staging_root

    journal = journal_root(output_path, view.dag_id, view.run_id, view.task_id, view.map_index)
    return staging_root(output_path, journal.rsplit("/", 1)[-1])


def _why(error: BaseException) -> str:
    """Why a source could not be read: this module's and the path rules' words as they are, the
    provider's own sentence for anything that came from another host."""
    from airflow_provider_eachlabs.plugin.files import Refused

    if isinstance(error, (Unavailable, Refused, ValueError)) and not isinstance(error, EachlabsError):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, OSError):
        return f"it cannot be read ({type(error).__name__})"
    return in_words(error)


def batch_picture(view: TaskView, row: dict[str, Any] | None, *, thumbnail: bool) -> Picture:
    """The stored output of one batch item, from the path its results row gives, which must lie in
    the batch's rendered ``output_path``: a row never makes this server read anything else."""
    if row is None:
        raise Unavailable("no such item in the batch's results")
    stored = row.get("stored_path")
    if not isinstance(stored, str) or not stored:
        raise Unavailable(f"item {str(row.get('key'))[:80]!r} has no stored output")
    key = (view.dag_id, view.run_id, view.task_id, view.map_index, "batch", stored)
    if thumbnail and (kept := _thumbnails.get(key)) is not None:
        return kept
    try:
        found = _checked(_read_stored(view, stored, staged=row.get("review") == "pending"))
    except Exception as error:
        raise Unavailable(f"the stored output {stored[:200]}: {_why(error)}") from None
    if not thumbnail:
        return found
    small = _thumbnail(found)
    _thumbnails.put(key, small)
    return small


def _checked(content: bytes) -> Picture:
    info = read_image_info(content)
    if info is None or not is_whole_image(content, info):
        raise ValueError("not a whole JPEG, PNG or WebP image")
    return Picture(content, info.content_type)


def missing_thumbnail(why: str) -> Picture:
    """What a thumbnail shows when its output cannot be read: "no image", visibly, instead of a broken
    image, with the reason in the SVG's title. The full-size link answers the reason as text."""
    from html import escape

    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{THUMBNAIL_SIDE}" height="{THUMBNAIL_SIDE * 3 // 4}"'
        ' viewBox="0 0 160 120"><title>' + escape(why) + "</title>"
        '<rect width="160" height="120" fill="#8884"/>'
        '<text x="80" y="68" font-family="sans-serif" font-size="20" text-anchor="middle" fill="#888">'
        "no image</text></svg>"
    )
    return Picture(svg.encode(), "image/svg+xml")


def _thumbnail(picture: Picture) -> Picture:
    from PIL import Image

    info = read_image_info(picture.content)
    if info is None or info.width * info.height > MAX_DECODE_PIXELS:
        raise Unavailable(f"too large to draw a thumbnail (more than {MAX_DECODE_PIXELS:,} pixels)")
    with Image.open(BytesIO(picture.content)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = BytesIO()
        if image.mode in ("RGBA", "LA", "P"):
            image.convert("RGBA").save(buffer, format="PNG")
            return Picture(buffer.getvalue(), "image/png")
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return Picture(buffer.getvalue(), "image/jpeg")


class _Kept:
    """The newest thumbnails, so a page of them does not fetch every output again on each view."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[tuple[object, ...], Picture] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> Picture | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[object, ...], picture: Picture) -> None:
        with self._lock:
            self._items[key] = picture
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_thumbnails = _Kept(_THUMBNAILS_KEPT)
