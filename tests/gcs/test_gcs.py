"""Staging data and pushing models to gs:// against the GCS emulator (the same client code as on GCP)."""
import os

import pytest
import tensorflow as tf

from components import gcs, pusher


def _write(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_stage_uploads_then_skips_unchanged_and_reuploads_changed(tmp_path, bucket):
    src = tmp_path / "data"
    _write(str(src / "train" / "a.tfrecord"), b"a" * 3000)
    _write(str(src / "eval" / "b.tfrecord"), b"b" * 10)
    _write(str(src / "label_map.txt"), b"x\ny\n")
    dst = f"gs://{bucket.name}/datasets/demo"

    first = gcs.stage_directory(str(src), dst, chunk_size=256 * 1024)
    assert (first.uploaded, first.skipped_unchanged, first.bytes_uploaded) == (3, 0, 3000 + 10 + 4)
    names = sorted(b.name for b in gcs.client().list_blobs(bucket.name))
    assert names == ["datasets/demo/eval/b.tfrecord", "datasets/demo/label_map.txt", "datasets/demo/train/a.tfrecord"]
    assert bucket.blob("datasets/demo/train/a.tfrecord").download_as_bytes() == b"a" * 3000
    assert gcs.read_text(dst + "/label_map.txt") == "x\ny\n"

    second = gcs.stage_directory(str(src), dst)
    assert (second.uploaded, second.skipped_unchanged) == (0, 3)

    _write(str(src / "eval" / "b.tfrecord"), b"changed")
    third = gcs.stage_directory(str(src), dst)
    assert (third.uploaded, third.skipped_unchanged) == (1, 2)
    assert bucket.blob("datasets/demo/eval/b.tfrecord").download_as_bytes() == b"changed"


def test_stage_rejects_bad_arguments(tmp_path, gcs_emulator):
    with pytest.raises(NotADirectoryError, match="nope"):
        gcs.stage_directory(str(tmp_path / "nope"), "gs://b/p")
    with pytest.raises(ValueError, match="not a gs:// URI"):
        gcs.stage_directory(str(tmp_path), "/local/path")


def test_gcs_push_round_trip(tiny_saved_model, tmp_path, bucket):
    base = f"gs://{bucket.name}/serving"
    first = pusher.push_model(tiny_saved_model, base, "m", blessed=True, version=100)
    second = pusher.push_model(tiny_saved_model, base, "m", blessed=True, version=None)
    assert first.path == f"{base}/m/100" and second.version > 100
    assert pusher.existing_versions(f"{base}/m") == [100, second.version]
    assert pusher.latest_version_path(f"{base}/m") == second.path
    with pytest.raises(pusher.VersionExistsError):
        pusher.push_model(tiny_saved_model, base, "m", blessed=True, version=100)
    with pytest.raises(pusher.NotBlessedError):
        pusher.push_model(tiny_saved_model, base, "m", blessed=False)

    # Download the pushed version and serve it: identical to the source model.
    local = tmp_path / "downloaded"
    prefix = "serving/m/100/"
    for blob in gcs.client().list_blobs(bucket.name, prefix=prefix):
        _write(str(local / blob.name[len(prefix):]), blob.download_as_bytes())
    loaded = tf.saved_model.load(str(local))
    assert loaded.signatures["serving_default"](tf.constant([3.0]))["output_0"].numpy().tolist() == [6.0]


def test_gcs_push_copies_server_side_from_a_gcs_model(tiny_saved_model, bucket):
    staged = f"gs://{bucket.name}/pipeline_root/Trainer/model/7/Format-Serving"
    gcs.stage_directory(tiny_saved_model, staged)
    result = pusher.push_model(staged, f"gs://{bucket.name}/serving", "m", blessed=True, version=5)
    pushed = sorted(b.name for b in gcs.client().list_blobs(bucket.name, prefix="serving/m/5/"))
    source = sorted(b.name for b in gcs.client().list_blobs(bucket.name, prefix="pipeline_root/Trainer/model/7/Format-Serving/"))
    assert [n.split("/5/", 1)[1] for n in pushed] == [n.split("Format-Serving/", 1)[1] for n in source]
    assert result.path.endswith("/m/5")


def test_gcs_partial_version_is_not_latest(tiny_saved_model, bucket):
    """A version whose upload died before saved_model.pb (written last) is never reported as loadable."""
    base = f"gs://{bucket.name}/serving/m"
    bucket.blob("serving/m/900/variables/variables.index").upload_from_string(b"partial")
    assert pusher.existing_versions(base) == [900]
    assert pusher.latest_version_path(base) is None


def test_gzip_tfrecord_writer_writes_to_gcs(bucket, monkeypatch):
    """ClipGen's and Ingest's record writer goes through Beam's file systems, so gs:// works as on local disk."""
    import gzip
    import io

    import apache_beam as beam
    from apache_beam.internal.gcp import auth
    # Anonymous, as the emulator takes: Beam would otherwise retry finding default credentials for ~20 s first.
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)

    from components.ingest import scan_tfrecords
    from components.tfrecord_io import WriteToGzipTFRecord
    records = [b"clip-%d" % i * (i + 1) for i in range(50)]
    with beam.Pipeline(argv=["--runner=DirectRunner"]) as pipeline:
        _ = pipeline | beam.Create(records) | WriteToGzipTFRecord(f"gs://{bucket.name}/clips/data_tfrecord",
                                                                  num_shards=2)
    blobs = sorted(gcs.client().list_blobs(bucket.name, prefix="clips/"), key=lambda b: b.name)
    assert [b.name for b in blobs] == ["clips/data_tfrecord-00000-of-00002.gz", "clips/data_tfrecord-00001-of-00002.gz"]
    read = [item.data for blob in blobs
            for item in scan_tfrecords(io.BytesIO(gzip.decompress(blob.download_as_bytes())))]
    assert sorted(read) == sorted(records)


def test_a_gcs_write_deletes_what_an_earlier_attempt_left_under_its_prefix(bucket, monkeypatch):
    """On an object store Beam's temporary folder is only a name prefix: the sink finds the earlier attempt's
    objects inside it, and its final shards of another count, and deletes them; other names stay
    (components/sinks.py)."""
    import apache_beam as beam
    from apache_beam.internal.gcp import auth
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)

    from components.tfrecord_io import WriteToGzipTFRecord
    stale = ["clips/beam-temp-data_tfrecord-" + "0" * 32 + "/partial.gz", "clips/data_tfrecord-00002-of-00003.gz"]
    kept = ["clips/README", "clips/data_tfrecord-span-00001-00000-of-00001.gz"]
    for name in stale + kept:
        bucket.blob(name).upload_from_string(b"left by an earlier attempt")
    with beam.Pipeline(argv=["--runner=DirectRunner"]) as pipeline:
        _ = pipeline | beam.Create([b"a", b"b", b"c"]) | WriteToGzipTFRecord(f"gs://{bucket.name}/clips/data_tfrecord",
                                                                           num_shards=2)
    names = sorted(b.name for b in gcs.client().list_blobs(bucket.name, prefix="clips/"))
    assert names == sorted(kept + ["clips/data_tfrecord-00000-of-00002.gz", "clips/data_tfrecord-00001-of-00002.gz"])
