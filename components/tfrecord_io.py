"""The TFRecord record layout: a Beam sink that writes gzipped TFRecords fast, and a reader that survives damage.

Why our own sink: Beam's ``WriteToTFRecord`` gzips with zlib at its default level 6. On ClipGen's raw clip pixels
that was the largest single cost (0.55 ms of a demo clip's ~1 ms). TFX's readers need gzip (``tfrecords_gzip`` is
the only TFRecord file format its TFXIO accepts), but not zlib: this sink compresses with ISA-L (``isal``), whose
level 1 wrote demo clips at ~14x zlib-6's speed for files ~30% larger; any gzip reader (TF, Beam, gunzip) reads
them (`bench/README.md`).
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import BinaryIO, Iterator

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from isal import isal_zlib

from components.sinks import OwnedPrefixSink

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


class _GzipTFRecordSink(OwnedPrefixSink):   # deletes what an earlier attempt of the write left (sinks.py)
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


# Why a record (or the rest of a file) could not be read: Ingest's reasons for these (components/ingest.py).
CORRUPT_RECORD = "corrupt_record"
RECORD_TOO_LARGE = "record_too_large"
TRUNCATED_FILE = "truncated_file"
CORRUPT_FRAMING = "corrupt_framing"
UNREADABLE_FILE = "unreadable_file"
DEFAULT_MAX_RECORD_BYTES = 1 << 30   # 1 GiB: far above any video record, far below a worker's memory


# ---- reading TFRecord files tolerantly ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScannedRecord:
    """One item of a scanned file: a record's bytes (``data``), or why a record or the rest of the file was lost."""
    index: int                 # record number in the file, from 0
    offset: int                # byte offset of the record's header (in the uncompressed stream)
    data: bytes | None = None
    reason: str | None = None  # one of REJECT_REASONS when data is None
    detail: str = ""
    length: int = 0            # the record's declared data length, when its framing was intact


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _skip(f: BinaryIO, n: int, chunk: int = 1 << 20) -> int:
    """Reads past ``n`` bytes without holding them (compressed streams cannot seek cheaply); bytes skipped."""
    skipped = 0
    while skipped < n:
        got = len(f.read(min(chunk, n - skipped)))
        if not got:
            break
        skipped += got
    return skipped


def scan_tfrecords(f: BinaryIO, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[ScannedRecord]:
    """Every record of an open (decompressed) TFRecord stream, checksums checked, never raising on bad bytes.

    A bad data checksum or an over-long record loses that record only (its length is trustworthy, so the next
    record is found); a bad length checksum or the end of the file inside a record ends the scan with one item
    saying what was lost. Memory: one record at a time, at most ``max_record_bytes``."""
    index = offset = 0
    while True:
        header = _read_exactly(f, LENGTH_HEADER.size)
        if not header:
            return
        where = f"record {index} at byte {offset}"
        if len(header) < LENGTH_HEADER.size:
            yield ScannedRecord(index, offset, reason=TRUNCATED_FILE,
                                detail=f"the file ends inside the header of {where}; that record is lost")
            return
        length, length_crc = LENGTH_HEADER.unpack(header)
        if masked_crc32c(header[:8]) != length_crc:
            yield ScannedRecord(index, offset, reason=CORRUPT_FRAMING,
                                detail=f"length checksum mismatch at {where}: records from {index} to the end "
                                       f"of the file are lost")
            return
        if length > max_record_bytes:
            skipped = _skip(f, length + DATA_CRC.size)
            if skipped < length + DATA_CRC.size:
                yield ScannedRecord(index, offset, reason=TRUNCATED_FILE,
                                    detail=f"{where} declares {length} bytes but the file ends after {skipped}")
                return
            yield ScannedRecord(index, offset, reason=RECORD_TOO_LARGE, length=length,
                                detail=f"{where} has {length} bytes > max_record_bytes {max_record_bytes}; skipped")
        else:
            data = _read_exactly(f, length)
            footer = _read_exactly(f, DATA_CRC.size)
            if len(data) < length or len(footer) < DATA_CRC.size:
                yield ScannedRecord(index, offset, reason=TRUNCATED_FILE,
                                    detail=f"{where} declares {length} bytes but the file ends after "
                                           f"{len(data)}; that record is lost")
                return
            if masked_crc32c(data) != DATA_CRC.unpack(footer)[0]:
                yield ScannedRecord(index, offset, reason=CORRUPT_RECORD, length=length,
                                    detail=f"data checksum mismatch in {where} ({length} bytes); record skipped")
            else:
                yield ScannedRecord(index, offset, data=data, length=length)
        offset += LENGTH_HEADER.size + length + DATA_CRC.size
        index += 1


def scan_tfrecord_file(path: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[ScannedRecord]:
    """scan_tfrecords over a file (gzip when the name ends in .gz, as Beam and TFX decide); a file that cannot be
    opened or decompressed ends with an ``unreadable_file`` item instead of an exception."""
    index = offset = 0
    try:
        with FileSystems.open(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.AUTO) as f:
            for item in scan_tfrecords(f, max_record_bytes):
                index, offset = item.index + 1, item.offset + LENGTH_HEADER.size + item.length + DATA_CRC.size
                yield item
    except (OSError, EOFError, zlib.error) as exc:   # BeamIOError is an OSError; gzip raises all three
        yield ScannedRecord(index, offset, reason=UNREADABLE_FILE,
                            detail=f"cannot read the file from record {index} (byte {offset}) on: "
                                   f"{type(exc).__name__}: {exc}")
