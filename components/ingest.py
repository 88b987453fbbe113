"""TFX ingest of video SequenceExample TFRecords: an ImportExampleGen set up for the video format.

Two ways in:

* ``PRE_SPLIT`` (default): ``input_base/train/*`` and ``input_base/eval/*`` become the train and eval splits
  as they are (the demo dataset's layout, and the usual layout of published Kinetics/UCF101 TFRecords).
* ``SPLIT_BY_ID``: one folder of records (``convert``'s ``videos-*.tfrecord``) is split into train/eval by a
  hash of the video id. TFX 1.16 supports this directly: with ``payload_format=FORMAT_TF_SEQUENCE_EXAMPLE``
  the ExampleGen executor parses every record as a SequenceExample, and ``partition_feature_name`` then names
  a *context* feature (tfx/components/example_gen/base_example_gen_executor.py, ``_GeneratePartitionKey``):
  the bucket is sha256(serialized id Feature) mod the bucket total. The split is therefore a pure function of
  the id: stable across runs, re-encodes and re-conversions, and every record of one video stays in one
  split. The id feature must be a bytes or int64 context feature present in every record, otherwise the
  component fails with "Feature name `...` does not exist."; records that carry their id under another key
  (e.g. ``video/filename``) pass that key as ``id_feature``.

Outputs are gzipped TFRecords of SequenceExamples in ``Split-train`` / ``Split-eval`` with the Examples
artifact's payload_format set to FORMAT_TF_SEQUENCE_EXAMPLE.
"""
from __future__ import annotations

from tfx.components import ImportExampleGen
from tfx.proto import example_gen_pb2

from components import video_format

PRE_SPLIT = "pre_split"
SPLIT_BY_ID = "split_by_id"
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"
HASH_BUCKETS = 100   # eval_percent buckets out of 100
DEFAULT_ID_FEATURE = video_format.DEFAULT_VIDEO_KEYS.video_ids[0]   # "example/id", what convert/demo write


def video_input_config(mode: str = PRE_SPLIT, train_pattern: str = "train/*", eval_pattern: str = "eval/*",
                       records_pattern: str = "videos-*.tfrecord*") -> example_gen_pb2.Input:
    """Which files under input_base are read, and (PRE_SPLIT) into which split."""
    if mode == PRE_SPLIT:
        return example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=TRAIN_SPLIT, pattern=train_pattern),
            example_gen_pb2.Input.Split(name=EVAL_SPLIT, pattern=eval_pattern)])
    if mode == SPLIT_BY_ID:
        return example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern=records_pattern)])
    raise ValueError(f"mode must be {PRE_SPLIT!r} or {SPLIT_BY_ID!r}, got {mode!r}")


def split_by_id_output_config(eval_percent: int = 25,
                              id_feature: str = DEFAULT_ID_FEATURE) -> example_gen_pb2.Output:
    """train/eval by hash of the context feature ``id_feature`` (eval gets ``eval_percent`` of 100 buckets)."""
    if not isinstance(eval_percent, int) or isinstance(eval_percent, bool) or not 1 <= eval_percent <= 99:
        raise ValueError(f"eval_percent must be an int in [1, 99], got {eval_percent!r}")
    if not isinstance(id_feature, str) or not id_feature:
        raise ValueError(f"id_feature must be a non-empty feature name, got {id_feature!r}")
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=TRAIN_SPLIT, hash_buckets=HASH_BUCKETS - eval_percent),
                example_gen_pb2.SplitConfig.Split(name=EVAL_SPLIT, hash_buckets=eval_percent)],
        partition_feature_name=id_feature))


def make_video_example_gen(input_base: str, mode: str = PRE_SPLIT, *, train_pattern: str = "train/*",
                           eval_pattern: str = "eval/*", records_pattern: str = "videos-*.tfrecord*",
                           eval_percent: int = 25, id_feature: str = DEFAULT_ID_FEATURE) -> ImportExampleGen:
    """ImportExampleGen reading video SequenceExample TFRecords under ``input_base`` (see module docstring).

    Patterns are globs relative to ``input_base``; TFRecords may be uncompressed or gzipped (``.gz``).
    ``eval_percent`` and ``id_feature`` apply to SPLIT_BY_ID only."""
    if not isinstance(input_base, str) or not input_base:
        raise ValueError(f"input_base must be a non-empty path, got {input_base!r}")
    input_config = video_input_config(mode, train_pattern, eval_pattern, records_pattern)
    output_config = split_by_id_output_config(eval_percent, id_feature) if mode == SPLIT_BY_ID else None
    return ImportExampleGen(
        input_base=input_base, input_config=input_config, output_config=output_config,
        payload_format=example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE)
