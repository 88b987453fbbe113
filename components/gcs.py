"""Google Cloud Storage through the official client (google-cloud-storage), which also honours
``STORAGE_EMULATOR_HOST`` — so the same code runs against GCS and against a local emulator in tests.

TensorFlow's own gs:// filesystem does not honour the emulator; code that must work in both places uses these.
"""
from __future__ import annotations

import base64
import dataclasses
import logging
import os
import time

import google_crc32c

log = logging.getLogger(__name__)


def is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
    """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://"):].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, name


def client():
    from google.cloud import storage
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"),
                              credentials=AnonymousCredentials())
    return storage.Client()  # credentials from the environment (Workload Identity / ADC), never the image


def read_text(path: str) -> str:
    if is_gcs(path):
        bucket, name = split_gcs(path)
        return client().bucket(bucket).blob(name).download_as_text()
    with open(path) as f:
        return f.read()


def crc32c_of_file(path: str) -> str:
    """Base64 CRC32C, the form GCS reports as ``blob.crc32c``."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


@dataclasses.dataclass
class StageSummary:
    uploaded: int = 0
    skipped_unchanged: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0


def stage_directory(src: str, dst: str, chunk_size: int = 8 * 1024 * 1024) -> StageSummary:
    """Uploads every file under ``src`` to ``dst`` (gs://bucket/prefix), skipping files whose CRC32C already
    matches; uploads are resumable (chunked) and verified by the server against our checksum."""
    if not os.path.isdir(src):
        raise NotADirectoryError(f"--src {src!r} is not a directory")
    bucket_name, prefix = split_gcs(dst)
    bucket = client().bucket(bucket_name)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    existing = {blob.name: blob.crc32c for blob in bucket.client.list_blobs(bucket_name, prefix=prefix)}
    summary, start = StageSummary(), time.time()
    for dirpath, _, filenames in sorted(os.walk(src)):
        for filename in sorted(filenames):
            local = os.path.join(dirpath, filename)
            name = prefix + os.path.relpath(local, src).replace(os.sep, "/")
            checksum = crc32c_of_file(local)
            if existing.get(name) == checksum:
                summary.skipped_unchanged += 1
                continue
            blob = bucket.blob(name, chunk_size=chunk_size)  # chunk_size => resumable upload session
            blob.crc32c = checksum
            blob.upload_from_filename(local, checksum="crc32c")
            summary.uploaded += 1
            summary.bytes_uploaded += os.path.getsize(local)
            log.info("staged %s -> gs://%s/%s", local, bucket_name, name)
    summary.seconds = round(time.time() - start, 2)
    log.info("stage %s -> %s: %d uploaded, %d unchanged", src, dst, summary.uploaded, summary.skipped_unchanged)
    return summary
