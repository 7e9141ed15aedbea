"""Object storage behind one narrow interface: ``file://`` paths and ``s3://bucket/prefix``.

Public methods check their arguments; the backends implement ``_put``/``_get``/... . The S3 backend
uses boto3 with a session per thread (boto3 sessions are not thread-safe), multipart transfers
tuned for checkpoint shards (parallel parts, bounded memory: chunk size x concurrency), adaptive
retries on throttling and connection errors, and an endpoint override for S3-compatible stores
(MinIO, Ceph RGW, moto) from the spec or ``AWS_ENDPOINT_URL``. Credentials come from the standard
AWS chain.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Protocol
from urllib.parse import urlparse

from orchestrator.errors import OrchError
from orchestrator.paths import orch_home

MB = 1024 * 1024


class StorageError(OrchError):
    """An object could not be read or written."""


class ObjectNotFound(StorageError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float


class ObjectStore(Protocol):
    uri: str

    def put(self, key: str, data: BinaryIO | bytes) -> int: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> BinaryIO: ...
    def list(self, prefix: str = "") -> list[ObjectInfo]: ...
    def delete(self, keys: list[str]) -> None: ...
    def abort_incomplete_uploads(self, prefix: str = "", select: "Select | None" = None) -> int: ...


Select = Callable[[str, float], bool]  # (key being uploaded, when the upload started) -> abort it?


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise StorageError(f"invalid object key {key!r}")
    return key


class FileObjectStore:
    """Objects as files under a root directory; writes go to a temporary name and are renamed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: BinaryIO | bytes) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        with open(tmp, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                shutil.copyfileobj(data, f, 8 * MB)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
        return size

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.uri}/{key}: not found") from None

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.uri}/{key}: not found") from None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        if not self.root.is_dir():
            return []
        base = self.root / prefix
        start = base if not prefix or base.is_dir() else base.parent  # never above the root
        if not start.exists():
            return []
        found = []
        for path in _walk_files(start):  # a directory removed meanwhile by another rank is skipped
            if not path.name.endswith(".partial"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        stat = path.stat()
                    except FileNotFoundError:  # deleted meanwhile (another rank's retention): not listed
                        continue
                    found.append(ObjectInfo(key, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda o: o.key)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def abort_incomplete_uploads(self, prefix: str = "", select: Select | None = None) -> int:
        """Remove partial files of writers that died (the file analogue of multipart uploads) for
        which ``select(key, modified)`` says so (all, without ``select``). A partial file renamed
        or removed meanwhile by its writer is skipped."""
        start = self.root / prefix if prefix else self.root
        base = start if start.is_dir() else start.parent
        if not base.exists():
            return 0
        removed = 0
        for path in (p for p in _walk_files(base) if p.name.endswith(".partial")):
            key = _partial_key(path.relative_to(self.root))
            if key is None or not key.startswith(prefix):
                continue
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:  # its writer renamed it into place meanwhile
                continue
            if select is None or select(key, modified):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _walk_files(start: Path):
    """Files under ``start``; unlike ``rglob``, ``os.walk`` skips directories deleted while walking."""
    for folder, _, names in os.walk(start):
        for name in names:
            yield Path(folder) / name


def _partial_key(relative: Path) -> str | None:
    """The key a partial file ``.<name>.<pid>.<thread>.partial`` is being written for."""
    parts = relative.name.split(".")
    if len(parts) < 5 or parts[0] != "":
        return None
    return (relative.parent / ".".join(parts[1:-3])).as_posix().removeprefix("./")


class S3ObjectStore:
    """``s3://bucket/prefix`` through boto3."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        chunk_mb: int = 16,
        concurrency: int = 8,
        max_attempts: int = 10,
    ):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.chunk, self.concurrency, self.max_attempts = chunk_mb * MB, concurrency, max_attempts
        self._local = threading.local()

    @property
    def client(self):
        """A client per thread (boto3 sessions are not thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "adaptive", "max_attempts": self.max_attempts},
                max_pool_connections=self.concurrency * 2,
                connect_timeout=10,
                read_timeout=120,
                tcp_keepalive=True,
            )
            client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=config)
            self._local.client = client
        return client

    def transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.chunk,
            multipart_chunksize=self.chunk,
            max_concurrency=self.concurrency,
            use_threads=True,
            io_chunksize=MB,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def _call(self, what: str, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchUpload", "404", "NotFound"):
                raise ObjectNotFound(f"{self.uri}: {what}: not found") from None
            raise StorageError(f"{self.uri}: {what}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{self.uri}: {what}: {exc}") from exc

    def put(self, key: str, data: BinaryIO | bytes) -> int:
        body = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        start = body.tell()
        size = body.seek(0, io.SEEK_END) - start
        body.seek(start)
        self._call(
            f"upload {key}",
            self.client.upload_fileobj,
            body,
            self.bucket,
            self._key(key),
            Config=self.transfer_config(),
        )  # boto3 closes ``body`` when done
        return size

    def get(self, key: str) -> bytes:
        buffer = io.BytesIO()
        self._call(
            f"download {key}",
            self.client.download_fileobj,
            self.bucket,
            self._key(key),
            buffer,
            Config=self.transfer_config(),
        )
        return buffer.getvalue()

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's bytes (read as it is consumed, not downloaded whole first)."""
        response = self._call(f"open {key}", self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return response["Body"]

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in self._call(f"list {prefix}", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full))):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                found.append(ObjectInfo(key, item["Size"], item["LastModified"].timestamp()))
        return sorted(found, key=lambda o: o.key)

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            if batch:
                self._call(
                    "delete", self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )

    def abort_incomplete_uploads(self, prefix: str = "", select: Select | None = None) -> int:
        """Abort multipart uploads under ``prefix`` that ``select(key, initiated)`` picks (all without it)."""
        full = self._key(prefix) if prefix else self.prefix
        paginator = self.client.get_paginator("list_multipart_uploads")
        pages = self._call("list uploads", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full)))
        aborted = 0
        for upload in (u for page in pages for u in page.get("Uploads", [])):
            key = upload["Key"][len(self.prefix) + 1 :] if self.prefix else upload["Key"]
            if select is None or select(key, upload["Initiated"].timestamp()):
                try:
                    self._call(
                        "abort upload",
                        self.client.abort_multipart_upload,
                        Bucket=self.bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                except ObjectNotFound:  # completed or aborted meanwhile
                    continue
                aborted += 1
        return aborted

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call("create bucket", self.client.create_bucket, Bucket=self.bucket)


def open_object_store(uri: str, home: Path | None = None, endpoint_url: str | None = None) -> ObjectStore:
    """``s3://bucket/prefix``, ``file:///abs/path``, or a relative path under ORCH_HOME."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri}: an s3:// URI needs a bucket")
        return S3ObjectStore(parsed.netloc, parsed.path.lstrip("/"), endpoint_url)
    if uri.startswith("file://"):
        return FileObjectStore(uri.removeprefix("file://"))
    path = Path(uri)
    if not path.is_absolute():
        path = (home or orch_home()) / path
    return FileObjectStore(path)
