"""The file store, on a directory and on an S3-compatible server (moto's server mode,
spoken to over HTTP as any S3 client would), and a deployment of two API processes
sharing a bucket: a batch created on one is read and finished through the other."""

from __future__ import annotations

import io
import signal

import boto3
import pytest

from shared.storage.file_store import FileStore
from testing.fake_model_server import FakeModelServer, free_port
from testing.load import wait_until
from testing.openai_sdk import chat_line, client, file_lines, jsonl, wait_until_finished
from tests.conftest import StackFactory
from tests.integration.shared.conftest import BUCKET

pytestmark = pytest.mark.integration


def test_objects_are_written_whole_read_listed_and_deleted(store: FileStore) -> None:
    assert store.get("files/none.json") is None and store.names("files") == []
    store.put("files/a.json", b'{"a": 1}')
    store.put("files/a.json", b'{"a": 2}')  # written again: the new one
    store.put_stream("files/a.data", io.BytesIO(b"x" * 3_000_000))  # more than one part on S3
    store.put("batches/b1/lines/0000000.ok", b"{}")
    store.put("batches/b2/batch.json", b"{}")
    assert store.get("files/a.json") == b'{"a": 2}'
    assert store.names("files") == ["a.data", "a.json"]
    assert store.names("batches") == ["b1", "b2"]
    assert store.names("batches/b1/lines") == ["0000000.ok"]
    with store.open("files/a.data") as opened:
        assert len(opened.read()) == 3_000_000
    store.delete("files/a.json")
    store.delete("files/a.json")  # nothing to delete: no error
    assert store.get("files/a.json") is None and store.names("files") == ["a.data"]
    with pytest.raises(FileNotFoundError):
        store.open("files/none.data")


def test_two_api_processes_share_batches_through_a_bucket(
    make_stack: StackFactory, fake: FakeModelServer, s3: dict[str, str]
) -> None:
    stack = make_stack(workers=1, api=False, FILE_STORE_URL=f"s3://{BUCKET}/two-apis", BATCH_POLL_SECONDS="0.3", **s3)
    urls = []
    apis = []
    for _ in range(2):
        port = free_port()
        apis.append(stack.processes.api(stack.env, port))
        urls.append(f"http://127.0.0.1:{port}")
    fake.latency = 0.05
    stack.url = urls[0]
    first = client(stack)
    lines = [chat_line(f"n{n}", f"q {n}") for n in range(60)]
    file_id = first.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id
    batch = first.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    stack.url = urls[1]
    second = client(stack)
    assert second.files.retrieve(file_id).bytes == len(jsonl(lines))
    wait_until(lambda: len(fake.completions) >= 10, 30, "lines to run")
    # The process it was created on (which drives it, woken at once) dies: the other
    # takes the batch over.
    apis[0].popen.send_signal(signal.SIGKILL)
    apis[0].popen.wait(5)
    finished = wait_until_finished(second, batch.id, timeout=90)
    assert finished.status == "completed"
    output = file_lines(second, finished.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(line["custom_id"] for line in lines)
    keys = boto3.client(
        "s3", endpoint_url=s3["FILE_STORE_S3_ENDPOINT"], aws_access_key_id="test", aws_secret_access_key="test",
        region_name="us-east-1",
    ).list_objects_v2(Bucket=BUCKET, Prefix=f"two-apis/batches/{batch.id}/lines/")  # fmt: skip
    assert keys["KeyCount"] == 60  # each line's record, in the bucket
