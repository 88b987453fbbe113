"""The TFRecord record layout, and a Beam sink that writes gzipped TFRecords fast.

Why our own sink: Beam's ``WriteToTFRecord`` gzips with zlib at its default level 6. On ClipGen's raw clip pixels
that was the largest single cost (0.55 ms of a demo clip's ~1 ms). TFX's readers need gzip (``tfrecords_gzip`` is
the only TFRecord file format its TFXIO accepts), but not zlib: this sink compresses with ISA-L (``isal``), whose
level 1 wrote demo clips at ~14x zlib-6's speed for files ~30% larger; any gzip reader (TF, Beam, gunzip) reads
them (`bench/README.md`).
"""
from __future__ import annotations

import struct

import apache_beam as beam
import google_crc32c
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from isal import isal_zlib

LENGTH_HEADER = struct.Struct("<QI")   # uint64 length, uint32 masked crc32c of the length
DATA_CRC = struct.Struct("<I")         # uint32 masked crc32c of the data
_LENGTH = struct.Struct("<Q")
_GZIP_WBITS = 16 + isal_zlib.MAX_WBITS   # deflate stream with a gzip header and trailer

COMPRESSION_LEVELS = range(isal_zlib.ISAL_BEST_SPEED, isal_zlib.ISAL_BEST_COMPRESSION + 1)   # ISA-L's 0..3
DEFAULT_COMPRESSION_LEVEL = 1


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum (crc32c, rotated and offset as in tensorflow/core/lib/hash/crc32c.h)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """One TFRecord: length, its checksum, the data, the data's checksum."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, DATA_CRC.pack(masked_crc32c(length)), data, DATA_CRC.pack(masked_crc32c(data))))


def check_compression_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in COMPRESSION_LEVELS:
        raise ValueError(f"compression_level must be an ISA-L gzip level, an int in [{COMPRESSION_LEVELS[0]}, "
                         f"{COMPRESSION_LEVELS[-1]}], got {level!r}")
    return level


class _GzipStream:
    """Write-only gzip stream over a file handle that Beam's file systems opened (local, gs://, ...)."""

    def __init__(self, raw, level: int):
        self._raw = raw
        self._compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)

    def write(self, data: bytes) -> None:
        compressed = self._compressor.compress(data)
        if compressed:
            self._raw.write(compressed)

    def close(self) -> None:
        self._raw.write(self._compressor.flush())
        self._raw.close()


class _GzipTFRecordSink(FileBasedSink):
    def __init__(self, file_path_prefix: str, compression_level: int, num_shards: int = 0):
        super().__init__(file_path_prefix, coder=beam.coders.BytesCoder(), file_name_suffix=".gz",
                         num_shards=num_shards, mime_type="application/octet-stream",
                         compression_type=CompressionTypes.UNCOMPRESSED)  # the gzip stream is ours
        self.compression_level = compression_level

    def open(self, temp_path):
        return _GzipStream(super().open(temp_path), self.compression_level)

    def write_encoded_record(self, file_handle, encoded_value: bytes) -> None:
        file_handle.write(encode_record(encoded_value))


class WriteToGzipTFRecord(beam.PTransform):
    """PCollection of bytes -> gzipped TFRecord shards ``<file_path_prefix>-SSSSS-of-NNNNN.gz``."""

    def __init__(self, file_path_prefix: str, compression_level: int = DEFAULT_COMPRESSION_LEVEL,
                 num_shards: int = 0):
        super().__init__()
        self._sink = _GzipTFRecordSink(file_path_prefix, check_compression_level(compression_level), num_shards)

    def expand(self, records):
        return records | beam.io.Write(self._sink)
