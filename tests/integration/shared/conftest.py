"""The file store on both of its backends: a directory, and an S3-compatible server
(moto's server mode, spoken to over HTTP as any S3 client would)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from shared.config import Config
from shared.storage.file_store import FileStore
from testing.fake_model_server import free_port

BUCKET = "gateway-files"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3-compatible server with one bucket: the settings that point at it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=BUCKET)
    yield {
        "FILE_STORE_S3_ENDPOINT": endpoint,
        "FILE_STORE_S3_REGION": "us-east-1",
        "FILE_STORE_S3_KEY": "test",
        "FILE_STORE_S3_SECRET": "test",
    }
    server.stop()


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileStore:
    if request.param == "directory":
        return FileStore(str(tmp_path / "files"))
    settings = request.getfixturevalue("s3")
    config = Config(
        _env_file=None,  # type: ignore[call-arg]
        file_store_url=f"s3://{BUCKET}/{tmp_path.name}",
        **{name.lower(): value for name, value in settings.items()},
    )
    return FileStore.from_config(config)
