"""Where files and batches are kept: a directory, or an S3-compatible bucket.

`FILE_STORE_URL` names it: a path (``data``, ``/data``, ``file:///data``) or
``s3://bucket/prefix`` (with ``FILE_STORE_S3_*`` for the endpoint and credentials of
an S3-compatible server). Batches live here and not in Redis alone: a Redis that
restarts without its data loses nothing of them. Several API hosts share a bucket
(a directory, only when it is shared storage).

Both backends are fsspec's (``LocalFileSystem``, s3fs); each object is written whole
(a local file through a temporary name and a rename), so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any, BinaryIO

import fsspec

from shared.config import Config


class FileStore:
    """Objects (bytes) by path, under the store's root; blocking calls (run them off the event loop)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        protocol, _, rest = url.partition("://") if "://" in url else ("file", "", url)
        self.local = protocol == "file"
        self.fs = fsspec.filesystem(protocol, **(options or {}))
        self.root = os.path.abspath(rest) if self.local else rest.strip("/")
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_config(cls, config: Config) -> FileStore:
        """The store `config` names (FILE_STORE_URL, FILE_STORE_S3_*)."""
        url = config.file_store_url
        if not url.startswith("s3://"):
            return cls(url)
        client: dict[str, Any] = {}
        if config.file_store_s3_endpoint:
            client["endpoint_url"] = config.file_store_s3_endpoint
        if config.file_store_s3_region:
            client["region_name"] = config.file_store_s3_region
        options: dict[str, Any] = {"client_kwargs": client, "use_listings_cache": False}
        if config.file_store_s3_key and config.file_store_s3_secret:
            options["key"] = config.file_store_s3_key
            options["secret"] = config.file_store_s3_secret.get_secret_value()
        return cls(url, options)

    def _path(self, path: str) -> str:
        return f"{self.root}/{path}"

    def put(self, path: str, data: bytes) -> None:
        """Write the object whole: readers see the old one or the new one, never half."""
        full = self._path(path)
        if not self.local:
            self.fs.pipe_file(full, data)
            return
        os.makedirs(os.path.dirname(full), exist_ok=True)
        temporary = f"{full}.{uuid.uuid4().hex}.part"
        with open(temporary, "wb") as out:
            out.write(data)
        os.replace(temporary, full)

    def put_stream(self, path: str, source: BinaryIO) -> None:
        """Write the object from a file read to its end (large uploads, without holding them in memory)."""
        full = self._path(path)
        target = f"{full}.{uuid.uuid4().hex}.part" if self.local else full
        if self.local:
            os.makedirs(os.path.dirname(full), exist_ok=True)
        with self.fs.open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        if self.local:
            os.replace(target, full)

    def get(self, path: str) -> bytes | None:
        """The object, or None when there is none."""
        try:
            return self.fs.cat_file(self._path(path))
        except FileNotFoundError:
            return None

    def get_many(self, folder: str, names: list[str]) -> dict[str, bytes]:
        """The objects of those `names` under `folder` that exist, by name: read
        concurrently from S3 (fsspec's ``cat_ranges``: one GET each, no listing), in
        turn from a directory."""
        paths = [self._path(f"{folder}/{name}") for name in names]
        read = self.fs.cat_ranges(paths, [None] * len(paths), [None] * len(paths), on_error="return")
        found = {}
        for name, data in zip(names, read, strict=True):
            if isinstance(data, FileNotFoundError):
                continue  # deleted meanwhile
            if isinstance(data, BaseException):
                raise data
            found[name] = data
        return found

    def open(self, path: str) -> Any:
        """The object as a binary file to read; FileNotFoundError when there is none."""
        return self.fs.open(self._path(path), "rb")

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def names(self, folder: str) -> list[str]:
        """The names of the objects directly under `folder` (none when it does not exist)."""
        full = self._path(folder).rstrip("/")
        try:
            found = self.fs.ls(full, detail=False)
        except FileNotFoundError:
            return []
        names = [str(name).rstrip("/").rsplit("/", 1)[-1] for name in found]
        return sorted(name for name in names if not name.endswith(".part"))

    def delete(self, path: str) -> None:
        """Remove the object (nothing when there is none)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(path))

    def delete_folder(self, folder: str) -> None:
        """Remove everything under `folder`."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(folder).rstrip("/"), recursive=True)
