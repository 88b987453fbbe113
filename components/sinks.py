"""File sinks that own their output prefix, so a retried or restarted job leaves only whole, final files.

Beam's ``FileBasedSink`` (``beam.io.Write``) already writes each bundle to a temporary file and renames only the
files of committed bundles when the job finalizes: a bundle that fails and is retried leaves its partial file in
the temporary folder, which finalize deletes (apache_beam/io/filebasedsink.py, apache_beam/io/iobase.py
``WriteImpl``). Two cases it does not cover, both seen with runners that restart a failed job (Flink's restart
strategy, a KFP pod retry, a TFX re-run into the same output folder):

- the temporary folder of an attempt that never finalized (``beam-temp-<prefix>-<uuid>``): each attempt makes a
  new one, and nothing deletes the old one;
- the final shards of an earlier attempt that finalized with another shard count (``-00000-of-00003``): Beam's
  pre-finalize deletes only the names this attempt is about to write.

``OwnedPrefixSink`` deletes both when a write starts (``initialize_write``, once per attempt, before any bundle
writes): files of this sink's naming under its prefix can only come from an earlier attempt of the same write,
because each output folder here belongs to one component execution. Other names are never touched.
"""
from __future__ import annotations

import logging
import re

import apache_beam as beam
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

logger = logging.getLogger(__name__)

_UUID_HEX = "[0-9a-f]{32}"   # Beam's temporary folder: beam-temp-<last component of the prefix>-<uuid1 hex>


def _shard_regex(shard_name_template: str) -> str:
    """Regex of the shard part of a final file name (Beam's S+ shard number and N+ shard count)."""
    if not shard_name_template:
        return ""
    parts = re.split(r"(S+|N+)", shard_name_template)
    return "".join(rf"\d{{{len(p)}}}" if p and p[0] in "SN" and set(p) == {p[0]} else re.escape(p) for p in parts)


def stale_outputs(file_path_prefix: str, file_name_suffix: str, shard_name_template: str) -> list[str]:
    """Files and temporary folders under ``file_path_prefix`` that a write with this naming leaves: final shards
    (any shard count) and Beam's ``beam-temp-`` folders of the same prefix."""
    directory, base = FileSystems.split(file_path_prefix)
    final = re.compile(re.escape(base) + _shard_regex(shard_name_template) + re.escape(file_name_suffix) + "$")
    temp = re.compile(f"beam-temp-{re.escape(base)}-{_UUID_HEX}$")
    stale = []
    patterns = [FileSystems.join(directory, f"{base}*"), FileSystems.join(directory, f"beam-temp-{base}-*"),
                FileSystems.join(directory, f"beam-temp-{base}-*", "*")]
    for result in FileSystems.match(patterns):
        for metadata in result.metadata_list:
            path = metadata.path.rstrip("/")
            name = FileSystems.split(path)[1]
            if final.match(name) or temp.match(name):
                stale.append(path)
            else:   # an object store lists the files inside a temporary folder, not the folder
                parent, _ = FileSystems.split(path)
                if temp.match(FileSystems.split(parent)[1]):
                    stale.append(path)
    return sorted(set(stale))


class OwnedPrefixSink(FileBasedSink):
    """A FileBasedSink that first deletes what earlier attempts of the same write left under its prefix."""

    def initialize_write(self):
        prefix, suffix = self.file_path_prefix.get(), self.file_name_suffix.get()
        stale = stale_outputs(prefix, suffix, self.shard_name_template)
        if stale:
            logger.warning("%s: deleting %d file(s) an earlier attempt left under %s: %s", type(self).__name__,
                           len(stale), prefix, stale[:5] + (["..."] if len(stale) > 5 else []))
            FileSystems.delete(stale)
        return super().initialize_write()


class _TextLinesSink(OwnedPrefixSink):
    def __init__(self, file_path_prefix: str, file_name_suffix: str, shard_name_template: str | None):
        super().__init__(file_path_prefix, coder=beam.coders.StrUtf8Coder(), file_name_suffix=file_name_suffix,
                         shard_name_template=shard_name_template, mime_type="text/plain",
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def write_encoded_record(self, file_handle, encoded_value: bytes) -> None:
        file_handle.write(encoded_value + b"\n")


class WriteTextLines(beam.PTransform):
    """PCollection of str -> text files of one line each, ``<prefix>-SSSSS-of-NNNNN<suffix>`` (or exactly
    ``<prefix><suffix>`` with ``shard_name_template=""``), as ``beam.io.WriteToText`` but owning the prefix."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", shard_name_template: str | None = None):
        super().__init__()
        self._sink = _TextLinesSink(file_path_prefix, file_name_suffix, shard_name_template)

    def expand(self, lines):
        return lines | beam.io.Write(self._sink)
