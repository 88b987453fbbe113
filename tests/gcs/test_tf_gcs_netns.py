"""One GCS fake for every client: tf.io.gfile, google-cloud-storage (components.gcs) and Beam's gcsio all read
and write the same objects on gs://, inside the network namespace of tests/standins/gcs_netns.py.

The checks that need the namespace run in one child process inside it (this file run as a script: one
TensorFlow and Beam import for all of them); each section reports on its own, and each test asserts one
section plus what the objects look like from outside the namespace.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import pytest

BUCKET = "bresnet-test"
REPO = Path(__file__).resolve().parents[2]
BIG = bytes(range(256)) * 12_000  # 3 MB: several read blocks, a resumable upload


# -- run inside the namespace ----------------------------------------------------------------------------------
def _inside_outside_upload_seen(base):
    import tensorflow as tf
    assert tf.io.gfile.GFile(f"{base}/uploaded/sub/hello.txt").read() == "uploaded from outside"
    assert sorted(tf.io.gfile.glob(f"{base}/uploaded/*")) == [f"{base}/uploaded/big.bin", f"{base}/uploaded/sub"]
    assert tf.io.gfile.GFile(f"{base}/uploaded/big.bin", "rb").read() == BIG


def _inside_tf_gfile(base):
    import tensorflow as tf
    gf, root = tf.io.gfile, f"{base}/tf"
    with gf.GFile(f"{root}/a.txt", "w") as f:
        f.write("written by tf")
    assert gf.GFile(f"{root}/a.txt").read() == "written by tf"
    with gf.GFile(f"{root}/big.bin", "wb") as f:
        f.write(BIG)
    with gf.GFile(f"{root}/big.bin", "rb") as f:
        f.seek(1_000_000)
        assert f.read(1000) == BIG[1_000_000:1_001_000]
    assert gf.stat(f"{root}/big.bin").length == len(BIG) and not gf.stat(f"{root}/big.bin").is_directory
    assert gf.exists(f"{root}/a.txt") and not gf.exists(f"{root}/missing.txt")
    gf.makedirs(f"{root}/empty/deeper")
    assert gf.isdir(f"{root}/empty/deeper") and gf.exists(f"{root}/empty")
    with gf.GFile(f"{root}/d/one/x.txt", "w") as f:
        f.write("x")
    assert gf.isdir(f"{root}/d/one")
    assert gf.glob(f"{root}/*.txt") == [f"{root}/a.txt"]
    assert gf.glob(f"{root}/*/one/*.txt") == [f"{root}/d/one/x.txt"]
    assert sorted(gf.listdir(root)) == ["a.txt", "big.bin", "d/", "empty/"], gf.listdir(root)
    gf.copy(f"{root}/a.txt", f"{root}/copied.txt")
    try:
        gf.copy(f"{root}/a.txt", f"{root}/copied.txt", overwrite=False)
        raise AssertionError("copy onto an existing object without overwrite did not fail")
    except tf.errors.AlreadyExistsError:
        pass
    gf.rename(f"{root}/copied.txt", f"{root}/renamed.txt")
    assert gf.GFile(f"{root}/renamed.txt").read() == "written by tf" and not gf.exists(f"{root}/copied.txt")
    gf.rename(f"{root}/d", f"{root}/d2")  # a "directory": every object under the prefix
    assert gf.GFile(f"{root}/d2/one/x.txt").read() == "x" and not gf.exists(f"{root}/d/one/x.txt")
    walked = [(d, sorted(s), sorted(f)) for d, s, f in gf.walk(f"{root}/d2")]
    assert walked[-1][2] == ["x.txt"], walked
    gf.remove(f"{root}/renamed.txt")
    assert not gf.exists(f"{root}/renamed.txt")
    try:
        gf.remove(f"{root}/renamed.txt")
        raise AssertionError("removing a missing object did not fail")
    except tf.errors.NotFoundError:
        pass
    gf.makedirs(f"{root}/tree/a/b")
    with gf.GFile(f"{root}/tree/a/b/f.txt", "w") as f:
        f.write("f")
    gf.rmtree(f"{root}/tree")
    assert not gf.exists(f"{root}/tree/a/b/f.txt") and not gf.exists(f"{root}/tree")


def _inside_tf_tfrecord_gzip(base):
    import tensorflow as tf
    path = f"{base}/tfrecord/data.tfrecord.gz"
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(200):
            writer.write(b"record-%03d" % i)
    files = tf.data.Dataset.list_files(f"{base}/tfrecord/*.tfrecord.gz", shuffle=False)
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    assert records == [b"record-%03d" % i for i in range(200)], records[:3]


def _inside_tf_keras_savedmodel(base):
    import numpy as np
    import tensorflow as tf
    path = f"{base}/keras_model"
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    model.save(path, save_format="tf")
    assert np.allclose(tf.keras.models.load_model(path)(x).numpy(), model(x).numpy())
    serving = tf.saved_model.load(path).signatures["serving_default"]
    assert np.allclose(list(serving(tf.constant(x)).values())[0].numpy(), model(x).numpy())


def _inside_gcs_client(base):
    import tempfile

    import tensorflow as tf

    from components import gcs
    assert gcs.read_text(f"{base}/tf/a.txt") == "written by tf"  # TF's object, through google-cloud-storage
    local = Path(tempfile.mkdtemp())
    (local / "sub").mkdir()
    (local / "sub" / "big.bin").write_bytes(BIG[:600_000])  # > chunk_size: a resumable upload in chunks
    (local / "small.txt").write_text("staged")
    first = gcs.stage_directory(str(local), f"{base}/staged", chunk_size=256 * 1024)
    again = gcs.stage_directory(str(local), f"{base}/staged", chunk_size=256 * 1024)
    assert (first.uploaded, again.uploaded, again.skipped_unchanged) == (2, 0, 2), (first, again)
    assert tf.io.gfile.GFile(f"{base}/staged/sub/big.bin", "rb").read() == BIG[:600_000]  # and back through TF
    bucket, prefix = gcs.split_gcs(f"{base}/tf/")
    names = sorted(b.name for b in gcs.client().list_blobs(bucket, prefix=prefix))
    assert f"{prefix}a.txt" in names and f"{prefix}big.bin" in names, names


def _inside_beam_filesystems(base):
    import tensorflow as tf
    from apache_beam.io.filesystems import FileSystems
    matched = {m.path: m.size_in_bytes for m in FileSystems.match([f"{base}/tf/*"])[0].metadata_list}
    assert matched[f"{base}/tf/a.txt"] == len("written by tf") and matched[f"{base}/tf/big.bin"] == len(BIG)
    with FileSystems.open(f"{base}/tf/a.txt") as f:
        assert f.read() == b"written by tf"
    with FileSystems.create(f"{base}/beam/a.txt") as f:
        f.write(b"written by beam")
    FileSystems.rename([f"{base}/beam/a.txt"], [f"{base}/beam/b.txt"])  # a batch copy + a batch delete
    FileSystems.copy([f"{base}/beam/b.txt"], [f"{base}/beam/c.txt"])
    FileSystems.delete([f"{base}/beam/b.txt"])
    assert not FileSystems.exists(f"{base}/beam/a.txt") and not FileSystems.exists(f"{base}/beam/b.txt")
    assert tf.io.gfile.GFile(f"{base}/beam/c.txt").read() == "written by beam"


def _inside_beam_pipeline_tfrecord(base):
    import apache_beam as beam
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions
    options = PipelineOptions(["--runner=DirectRunner", f"--temp_location={base}/beam_tmp"])
    with beam.Pipeline(options=options) as p:
        _ = (p | beam.Create([b"beam-%03d" % i for i in range(100)])
             | beam.io.WriteToTFRecord(f"{base}/beam_out/part", file_name_suffix=".tfrecord.gz", num_shards=2))
    files = sorted(tf.io.gfile.glob(f"{base}/beam_out/part-*"))
    assert len(files) == 2, files
    records = sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert records == [b"beam-%03d" % i for i in range(100)]
    with beam.Pipeline(options=options) as p:  # Beam reads what TF wrote
        _ = (p | beam.io.ReadFromTFRecord(f"{base}/tfrecord/data.tfrecord.gz") | beam.combiners.Count.Globally()
             | beam.Map(str) | beam.io.WriteToText(f"{base}/beam_count", shard_name_template=""))
    assert tf.io.gfile.GFile(f"{base}/beam_count").read().strip() == "200"


SECTIONS = {name[len("_inside_"):]: fn for name, fn in globals().items() if name.startswith("_inside_")}


def _main(base: str) -> None:
    import warnings
    warnings.filterwarnings("ignore")
    results = {}
    for name, fn in SECTIONS.items():
        start = time.time()
        try:
            fn(base)
            results[name] = {"ok": True, "seconds": round(time.time() - start, 2)}
        except BaseException:
            results[name] = {"ok": False, "seconds": round(time.time() - start, 2), "error": traceback.format_exc()}
    print("RESULTS " + json.dumps(results))


# -- the tests -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inside(gcs_netns, tmp_path_factory):
    """Uploads a directory from outside, then runs every section inside the namespace; their results."""
    base = f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
    local = tmp_path_factory.mktemp("upload")
    (local / "sub").mkdir()
    (local / "sub" / "hello.txt").write_text("uploaded from outside")
    (local / "big.bin").write_bytes(BIG)
    gcs_netns.upload_dir(local, f"{base}/uploaded")
    start = time.time()
    done = gcs_netns.run([sys.executable, __file__, base], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, f"rc {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    results = json.loads(lines[-1][len("RESULTS "):])
    results["_seconds"] = round(time.time() - start, 1)
    return base, results


def _assert_section(inside, name):
    _, results = inside
    result = results[name]
    assert result["ok"], f"{name} failed inside the namespace:\n{result['error']}"


def _key(base: str, *parts: str) -> str:
    return "/".join([base[len(f"gs://{BUCKET}/"):], *parts])


def test_an_upload_from_outside_is_read_by_tf_inside(inside):
    _assert_section(inside, "outside_upload_seen")


def test_tf_gfile_operations(inside, gcs_netns):
    _assert_section(inside, "tf_gfile")
    base, _ = inside
    assert gcs_netns.read_object(BUCKET, _key(base, "tf", "a.txt")) == b"written by tf"
    assert gcs_netns.read_object(BUCKET, _key(base, "tf", "big.bin")) == BIG
    names = gcs_netns.list_objects(BUCKET, _key(base, "tf", ""))
    assert _key(base, "tf", "d2", "one", "x.txt") in names and _key(base, "tf", "empty", "deeper/") in names
    assert not [n for n in names if "/d/" in n or "renamed" in n or "copied" in n or "/tree/" in n], names


def test_tf_tfrecord_gzip_round_trip(inside):
    _assert_section(inside, "tf_tfrecord_gzip")


def test_tf_keras_savedmodel_save_and_load(inside, gcs_netns):
    _assert_section(inside, "tf_keras_savedmodel")
    base, _ = inside
    names = set(gcs_netns.list_objects(BUCKET, _key(base, "keras_model", "")))
    for name in ("saved_model.pb", "keras_metadata.pb", "variables/variables.index"):
        assert _key(base, "keras_model", name) in names, names


def test_google_cloud_storage_reads_and_stages_with_tf(inside, gcs_netns):
    _assert_section(inside, "gcs_client")
    base, _ = inside
    assert gcs_netns.read_object(BUCKET, _key(base, "staged", "small.txt")) == b"staged"


def test_beam_gcsio_filesystem_operations(inside, gcs_netns):
    _assert_section(inside, "beam_filesystems")
    base, _ = inside
    assert gcs_netns.list_objects(BUCKET, _key(base, "beam", "")) == [_key(base, "beam", "c.txt")]


def test_beam_pipeline_tfrecords_on_gs(inside, gcs_netns):
    _assert_section(inside, "beam_pipeline_tfrecord")
    base, _ = inside
    assert gcs_netns.read_object(BUCKET, _key(base, "beam_count")).strip() == b"200"


def test_namespace_resolves_google_to_its_loopback_and_reaches_nothing_else(gcs_netns):
    with socket.socket() as listener:  # on the machine's loopback: must stay out of the namespace's reach
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (
            "import socket, sys\n"
            f"hosts = {['storage.googleapis.com', 'www.googleapis.com', 'oauth2.googleapis.com']!r}\n"
            "print([socket.gethostbyname(h) for h in hosts])\n"
            "for addr in [('127.0.0.1', int(sys.argv[1])), ('8.8.8.8', 443)]:\n"
            "    try:\n"
            "        socket.create_connection(addr, timeout=3).close(); print('reached', addr)\n"
            "    except OSError as e:\n"
            "        print('unreachable', addr[0], e.errno)\n")
        done = gcs_netns.run([sys.executable, "-c", code, str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == str(["127.0.0.1"] * 3)
    assert lines[1].startswith("unreachable 127.0.0.1") and lines[2].startswith("unreachable 8.8.8.8"), lines


def _namespace_gone(name: str) -> bool:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    return name not in listed and not os.path.exists(f"/var/run/netns/{name}") \
        and not os.path.exists(f"/etc/netns/{name}")


def test_stop_kills_everything_in_the_namespace_and_deletes_it(gcs_netns, tmp_path):
    from standins.gcs_netns import GcsNetns
    gcs = GcsNetns(tmp_path).start()
    stray = subprocess.Popen(gcs.command(["sleep", "300"]))  # something a test left running inside
    servers = list(gcs._procs)
    assert subprocess.run(["ip", "netns", "pids", gcs.name], capture_output=True, text=True).stdout.split()
    gcs.stop()
    assert stray.wait(timeout=10) != 0
    assert all(p.poll() is not None for p in servers)
    assert _namespace_gone(gcs.name)
    gcs.stop()  # twice is fine


def test_a_stale_namespace_of_a_dead_run_is_swept(gcs_netns):
    from standins.gcs_netns import NAME_PREFIX, sweep_stale
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{NAME_PREFIX}{dead.pid}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    os.makedirs(f"/etc/netns/{name}")
    Path(f"/etc/netns/{name}/hosts").write_text("127.0.0.1 localhost\n")
    orphan = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"])
    try:
        time.sleep(0.2)
        assert name in sweep_stale()
        assert orphan.wait(timeout=10) != 0
        assert _namespace_gone(name)
    finally:
        if orphan.poll() is None:
            orphan.kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


if __name__ == "__main__":  # inside the namespace, started by the `inside` fixture
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # the project's Keras (bresnet/_keras.py), before TensorFlow loads
    sys.path.insert(0, str(REPO))
    _main(sys.argv[1])
