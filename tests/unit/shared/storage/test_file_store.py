"""The file store on a directory: objects written whole, read, listed and deleted; and the
S3 store as FILE_STORE_URL and FILE_STORE_S3_* name it. A bucket on a real S3 server is
in tests/integration/shared/test_file_store.py."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from shared.config import Config
from shared.storage.file_store import FileStore

pytestmark = pytest.mark.unit


def test_objects_are_written_whole_read_listed_and_deleted(tmp_path: Path) -> None:
    store = FileStore(f"file://{tmp_path}/root")
    store.put("batches/b1/lines/0000002.ok", b"two")
    store.put_stream("batches/b1/lines/0000001.ok", io.BytesIO(b"x" * (3 << 20)))
    (tmp_path / "root/batches/b1/lines/0000003.ok.0af3.part").write_bytes(b"half")  # a write under way
    assert store.names("batches/b1/lines") == ["0000001.ok", "0000002.ok"]
    assert store.get("batches/b1/lines/0000002.ok") == b"two" and store.exists("batches/b1/lines/0000002.ok")
    with store.open("batches/b1/lines/0000001.ok") as read:
        assert len(read.read()) == 3 << 20
    assert store.get("nothing") is None and not store.exists("nothing") and store.names("no/folder") == []
    with pytest.raises(FileNotFoundError):
        store.open("nothing")
    store.delete("batches/b1/lines/0000002.ok")
    store.delete("batches/b1/lines/0000002.ok")  # nothing there: nothing to do
    assert store.names("batches/b1/lines") == ["0000001.ok"]
    store.delete_folder("batches/b1")
    store.delete_folder("batches/b1")
    assert store.names("batches") == []


def test_a_rewritten_object_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    for content in (b"first", b"second"):
        store.put("files/f.json", content)
    assert store.get("files/f.json") == b"second"
    assert os.listdir(tmp_path / "files") == ["f.json"]


def test_a_relative_path_is_a_directory_under_the_working_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = FileStore("data")
    assert store.local and store.root == str(tmp_path / "data") and (tmp_path / "data").is_dir()


def test_an_s3_store_takes_its_endpoint_region_and_credentials_from_the_config() -> None:
    config = Config(
        _env_file=None,  # type: ignore[call-arg]
        file_store_url="s3://bucket/prefix/",
        file_store_s3_endpoint="http://127.0.0.1:9000",
        file_store_s3_region="eu-west-3",
        file_store_s3_key="AKIA",
        file_store_s3_secret="s3cret",
    )
    store = FileStore.from_config(config)
    assert not store.local and store.root == "bucket/prefix"
    options = store.fs.storage_options
    assert options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-3"}
    assert (options["key"], options["secret"]) == ("AKIA", "s3cret")
    assert options["use_listings_cache"] is False  # another API process's writes are seen at once
