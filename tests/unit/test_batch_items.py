"""A batch's items: a list, or a JSONL or CSV manifest read as a stream, each item with a key that names
its output file; every refusal names where the item is, the field, the value and the rule."""

from __future__ import annotations

import io
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
import pytest

from airflow_provider_eachlabs.batch import items as items_module
from airflow_provider_eachlabs.batch.items import BatchItem, iter_items
from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.storage import FILE_STEM_RULE


def listed(items: Any = None, items_path: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    return [(item.where, item.key, item.fields) for item in iter_items(items, items_path)]


# --- a list -------------------------------------------------------------------------------------------


def test_list_items_are_keyed_by_position_unless_they_carry_a_key():
    assert listed([{"seed": 1}, {"key": "sofa", "seed": 2}, {"key": "", "seed": 3}, {"key": 7}]) == [
        ("items[0]", "0", {"seed": 1}),
        ("items[1]", "sofa", {"seed": 2}),
        ("items[2]", "2", {"seed": 3}),  # an empty key is no key
        ("items[3]", "7", {}),
    ]


def test_an_item_names_its_fields_in_errors():
    item = BatchItem("line 8", "a", {})
    assert item.field_name("steps") == "item 'a' (line 8) steps"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("../escape", r"Invalid items\[1\] key='\.\./escape': names the item's output file, so it "),
        (".hidden", r"Invalid items\[1\] key='\.hidden': names the item's output file"),
        ("a/b", r"Invalid items\[1\] key='a/b': names the item's output file"),
        ("x" * 129, r"Invalid items\[1\] key='xxxx"),
    ],
)
def test_a_key_that_is_no_plain_file_name_is_refused_naming_the_item_value_and_rule(raw: str, message: str):
    with pytest.raises(EachlabsInputError, match=message) as caught:
        listed([{"key": "fine"}, {"key": raw}])
    assert caught.value.rule.endswith(FILE_STEM_RULE)
    assert caught.value.field == "items[1] key"


@pytest.mark.parametrize("raw", [5, "a string", ["a", "list"], None])
def test_an_item_that_is_not_an_object_is_refused_naming_its_position(raw: Any):
    with pytest.raises(
        EachlabsInputError, match=r"Invalid items\[1\]=.*: must be an object of the item's fields"
    ):
        listed([{"seed": 1}, raw])


@pytest.mark.parametrize("items", ["not a list", b"bytes", {"key": "a dict"}, 42])
def test_items_that_are_not_a_list_are_refused(items: Any):
    with pytest.raises(EachlabsInputError, match=r"Invalid items=.*: must be a list of objects"):
        listed(items)


@pytest.mark.parametrize(("items", "items_path"), [(None, None), ([{"a": 1}], "x.jsonl")])
def test_exactly_one_of_items_and_items_path(items: Any, items_path: str | None):
    with pytest.raises(EachlabsInputError, match="give exactly one of items and items_path"):
        listed(items, items_path)


def test_an_empty_list_is_an_empty_batch():
    assert listed([]) == []


# --- JSONL and CSV manifests ------------------------------------------------------------------------------


def test_a_jsonl_manifest_yields_its_objects_with_their_line_numbers(tmp_path: Path):
    manifest = tmp_path / "items.jsonl"
    manifest.write_text('{"key": "a", "seed": 1}\n\n   \n{"seed": 2, "prompt": "sky"}\n{"key": "c"}')
    assert listed(items_path=str(manifest)) == [
        ("line 1", "a", {"seed": 1}),
        ("line 4", "1", {"seed": 2, "prompt": "sky"}),  # keyed by position among items, blank lines skipped
        ("line 5", "c", {}),
    ]
    assert listed(items_path=manifest.as_uri()) == listed(items_path=str(manifest))
    (tmp_path / "items.ndjson").write_text(manifest.read_text())
    assert listed(items_path=str(tmp_path / "items.ndjson")) == listed(items_path=str(manifest))


def test_a_line_that_is_not_json_is_refused_naming_its_line_and_text(tmp_path: Path):
    manifest = tmp_path / "items.jsonl"
    manifest.write_text('{"key": "a"}\n{"key": "b", "seed": 2,}\n')
    with pytest.raises(
        EachlabsInputError,
        match=r"""Invalid items_path line 2='{"key": "b", "seed": 2,}': is not JSON \(""",
    ):
        listed(items_path=str(manifest))


def test_a_jsonl_line_that_is_not_an_object_is_refused_naming_its_line(tmp_path: Path):
    manifest = tmp_path / "items.jsonl"
    manifest.write_text('{"key": "a"}\n["b", 2]\n')
    with pytest.raises(EachlabsInputError, match=r"Invalid line 2=\['b', 2\]: must be an object"):
        listed(items_path=str(manifest))


def test_a_bad_key_in_a_manifest_names_its_line(tmp_path: Path):
    manifest = tmp_path / "items.csv"
    manifest.write_text("key,seed\nok,1\nno way,2\n")
    with pytest.raises(
        EachlabsInputError, match=r"Invalid line 3 key='no way': names the item's output file"
    ):
        listed(items_path=str(manifest))


def test_a_csv_manifest_yields_rows_with_empty_cells_left_to_the_defaults(tmp_path: Path):
    manifest = tmp_path / "items.csv"
    manifest.write_text(
        'key,prompt,seed\nsofa,"a red sofa, velvet",1\n,"a lamp",\nshelf,"two\nlines",3\n', newline=""
    )
    assert listed(items_path=str(manifest)) == [
        ("line 2", "sofa", {"prompt": "a red sofa, velvet", "seed": "1"}),
        ("line 3", "1", {"prompt": "a lamp"}),
        ("line 5", "shelf", {"prompt": "two\nlines", "seed": "3"}),  # the line where its row ends
    ]


@pytest.mark.parametrize("name", ["items.json", "items.txt", "items"])
def test_a_manifest_of_another_kind_is_refused(tmp_path: Path, name: str):
    (tmp_path / name).write_text("[]")
    with pytest.raises(
        EachlabsInputError, match=r"Invalid items_path=.*: must end in \.jsonl, \.ndjson, \.csv"
    ):
        listed(items_path=str(tmp_path / name))


def test_a_missing_manifest_is_refused_naming_the_path(tmp_path: Path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(
        EachlabsInputError, match=rf"Invalid items_path='{missing}': no file exists at this path"
    ):
        listed(items_path=str(missing))


def test_a_manifest_on_object_storage_is_read_the_same(tmp_path: Path):
    root = f"/eachlabs-items-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"{root}/items.jsonl", b'{"key": "a", "seed": 1}\n{"seed": 2}\n')
    memory.pipe_file(f"{root}/items.csv", b"key,seed\na,1\n,2\n")
    try:
        assert listed(items_path=f"memory://{root}/items.jsonl") == [
            ("line 1", "a", {"seed": 1}),
            ("line 2", "1", {"seed": 2}),
        ]
        assert listed(items_path=f"memory://{root}/items.csv") == [
            ("line 2", "a", {"seed": "1"}),
            ("line 3", "1", {"seed": "2"}),
        ]
        with pytest.raises(EachlabsInputError, match=r"Invalid items_path='memory://.*/gone\.csv': no file"):
            listed(items_path=f"memory://{root}/gone.csv")
    finally:
        memory.rm(root, recursive=True)


# --- read as a stream ------------------------------------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A file's bytes, counting how many were read."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        read = self._file.readinto(buffer)
        self.count += read
        return read

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CountingReader]]:
    """Manifests opened through a counter of the bytes read from them."""
    readers: list[CountingReader] = []

    def open_text(path: str) -> IO[str]:
        reader = CountingReader(Path(path))
        readers.append(reader)
        return io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8", newline="")

    monkeypatch.setattr(items_module, "_open_text", open_text)
    yield readers


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_manifest_is_read_as_a_stream_not_loaded_whole(
    tmp_path: Path, counted: list[CountingReader], suffix: str
):
    """Three items taken from a manifest of 100,000 read a few kilobytes of it, and a broken last line
    is never reached."""
    manifest = tmp_path / f"items{suffix}"
    with manifest.open("w") as out:
        if suffix == ".csv":
            out.write("key,prompt,seed\n")
            out.writelines(f"item{n},a prompt long enough to weigh something,{n}\n" for n in range(100_000))
            out.write('broken,"never closed\n')
        else:
            out.writelines(
                json.dumps({"key": f"item{n}", "prompt": "a prompt long enough to weigh", "seed": n}) + "\n"
                for n in range(100_000)
            )
            out.write("{broken\n")
    size = manifest.stat().st_size
    first = list(itertools.islice(iter_items(None, str(manifest)), 3))
    assert [item.key for item in first] == ["item0", "item1", "item2"]
    (reader,) = counted
    assert 0 < reader.count <= 64 * 1024 < size / 50


def test_a_manifest_is_opened_only_when_its_items_are_asked_for(
    tmp_path: Path, counted: list[CountingReader]
):
    manifest = tmp_path / "items.jsonl"
    manifest.write_text('{"seed": 1}\n')
    stream = iter_items(None, str(manifest))
    assert counted == []
    assert next(stream).key == "0"
    assert len(counted) == 1
