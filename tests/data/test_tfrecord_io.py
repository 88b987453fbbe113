"""The gzipped TFRecord writer (ISA-L) that ClipGen and Ingest use: readable by TF, Beam and the Ingest scanner."""
import glob
import gzip
import io
import os

import apache_beam as beam
import pytest
import tensorflow as tf

from components.ingest import scan_tfrecords
from components.tfrecord_io import COMPRESSION_LEVELS, WriteToGzipTFRecord, encode_record

RECORDS = [b"", b"x", bytes(range(256)) * 400, b"\x00" * 100_000, os.urandom(70_000)]


def _write(records, prefix: str, level: int, num_shards: int = 0) -> list[str]:
    with beam.Pipeline(argv=["--runner=DirectRunner"]) as pipeline:
        _ = pipeline | beam.Create(records) | WriteToGzipTFRecord(prefix, level, num_shards)
    return sorted(glob.glob(prefix + "*"))


def _read_tf(files: list[str]) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_encode_record_matches_tensorflow_writer(tmp_path):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in RECORDS:
            writer.write(record)
    assert open(path, "rb").read() == b"".join(encode_record(r) for r in RECORDS)


@pytest.mark.parametrize("level", list(COMPRESSION_LEVELS))
def test_every_level_writes_gzip_that_tf_and_the_ingest_scanner_read_back(tmp_path, level):
    files = _write(RECORDS, str(tmp_path / "out" / "data_tfrecord"), level, num_shards=2)
    assert len(files) == 2 and all(f.endswith(".gz") for f in files)
    assert all(open(f, "rb").read(2) == b"\x1f\x8b" for f in files)      # gzip magic
    assert sorted(_read_tf(files)) == sorted(RECORDS)
    scanned = [item for f in files for item in scan_tfrecords(io.BytesIO(gzip.decompress(open(f, "rb").read())))]
    assert all(item.reason is None for item in scanned), [item.detail for item in scanned if item.reason]
    assert sorted(item.data for item in scanned) == sorted(RECORDS)


def test_a_higher_level_writes_smaller_files(tmp_path):
    clip_like = [bytes(i % 7 for i in range(50_000)) + os.urandom(2_000) for _ in range(20)]
    sizes = {level: sum(os.path.getsize(f) for f in _write(clip_like, str(tmp_path / f"l{level}" / "d"), level))
             for level in (0, 3)}
    assert sizes[3] < sizes[0] < sum(map(len, clip_like))


def test_empty_collection_writes_a_readable_empty_shard(tmp_path):
    files = _write([], str(tmp_path / "empty" / "data_tfrecord"), 1)
    assert files and _read_tf(files) == []


@pytest.mark.parametrize("level", [-1, 4, 9, 1.0, True, "1"])
def test_bad_level_is_refused_naming_the_setting(level):
    with pytest.raises(ValueError, match="compression_level"):
        WriteToGzipTFRecord("/tmp/never-written", level)
