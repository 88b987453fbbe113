"""The Beam steps on Apache Flink (beam.runner flink) against the DirectRunner, and sinks that survive a retry.

Flink runs here for real: an embedded Flink 1.19 cluster inside Beam's Flink job server (the jar that
scripts/install_standins.sh assembles from Maven Central), parallelism 2, the Python code in SDK worker processes
(loopback process workers), Flink's restart strategy from deploy/flink/flink-conf.yaml; the arguments are the ones
``RunConfig.beam_pipeline_args`` builds for ``--beam-runner flink``.

1. Same results (module fixture: two runs of Ingest -> ClipGen -> ClipSchema -> Transform, one per runner, on the
   demo data and the bad-input corpus together): the same Ingest records and ClipGen clips (content hashes, as
   multisets), the same dead letters, the same accounting, the same Transform statistics within float tolerance.
2. Retry-safe sinks: a ClipGen clip writer fails once after writing part of its records; Flink re-runs the failed
   task and the job ends with exactly the DirectRunner's clips, no temporary or partial files. And a write into a
   folder an earlier, failed attempt left behind (a pod retry) deletes that attempt's files first.
"""
import collections
import glob
import hashlib
import json
import os
import shutil

import pytest
import tensorflow as tf

from bad_inputs import LABELS as CORPUS_LABELS, build_corpus

pytestmark = pytest.mark.slow

DEMO_VIDEOS_PER_CLASS = 4
T, H, W = 4, 16, 16
TRAIN_PATTERN, EVAL_PATTERN = "train/*.tfrecord*", "eval/*.tfrecord*"
DIRECT = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="module", autouse=True)
def _stop_flink_job_server():
    """The job server the Flink runs start (one per process, components/beam_workers.py) ends with this module."""
    yield
    from components import beam_workers
    beam_workers.stop_job_servers()


def flink_args():
    """What ``--beam-runner flink`` compiles to (the config's own builder), checked for the job server jar."""
    from components import beam_workers
    from pipeline.config import load_config
    config = load_config("smoke", {"beam": {"runner": "flink"}, "labels": ["a", "b"]})
    args = config.beam_pipeline_args()
    jar = config.beam.job_server_jar()
    if not os.path.isfile(jar):
        pytest.fail(f"Beam's Flink job server is missing at {jar}: run `make standins` (make test does)")
    beam_workers.prepare(args)
    return args


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The demo data with the bad-input corpus (after convert) beside it: one window, two label sets."""
    from components.convert import run_convert
    from pipeline.demo_data import generate_demo_data
    root = str(tmp_path_factory.mktemp("runners"))
    data = os.path.join(root, "data")
    generate_demo_data(data, videos_per_class=DEMO_VIDEOS_PER_CLASS, seed=3)
    corpus = build_corpus(os.path.join(root, "corpus"))
    run_convert(corpus.csv_path, os.path.join(corpus.root, "train"), short_side=None, beam_args=DIRECT)
    for split in ("train", "eval"):
        for path in glob.glob(os.path.join(corpus.root, split, "*.tfrecord*")):
            shutil.copy(path, os.path.join(data, split, "corpus-" + os.path.basename(path)))
    return data


def _run(data_dir: str, root: str, beam_args: list) -> str:
    from tfx import v1 as tfx

    from components.clipgen import ClipGen
    from components.clipgen.schema import ClipSchemaGen
    from components.ingest import make_video_example_gen
    from pipeline.demo_data import DEMO_CLASSES

    labels = sorted({*DEMO_CLASSES, *CORPUS_LABELS})
    ingest = make_video_example_gen(data_dir, train_pattern=TRAIN_PATTERN, eval_pattern=EVAL_PATTERN,
                                    max_rejected_fraction=1.0, labels=labels)
    clipgen = ClipGen(examples=ingest.outputs["examples"], num_frames=T, height=H, width=W, labels=labels,
                      clips_per_video_train=2, max_rejected_fraction=1.0, num_shards=2)
    schema = ClipSchemaGen()
    transform = tfx.components.Transform(
        examples=clipgen.outputs["clips"], schema=schema.outputs["schema"],
        preprocessing_fn="components.transform_module.preprocessing_fn",
        custom_config={"clip_shape": clipgen.clip_shape}, materialize=False, disable_statistics=True)
    for component, node_id in [(ingest, "Ingest"), (clipgen, "ClipGen"), (schema, "ClipSchema"),
                               (transform, "Transform")]:
        component.with_id(node_id)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(os.path.join(root, "metadata.sqlite"))
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="runners", pipeline_root=os.path.join(root, "pipeline"),
        components=[ingest, clipgen, schema, transform], metadata_connection_config=metadata,
        beam_pipeline_args=beam_args)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return os.path.join(root, "pipeline")


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    return {"direct": _run(data_dir, str(tmp_path_factory.mktemp("direct")), DIRECT),
            "flink": _run(data_dir, str(tmp_path_factory.mktemp("flink")), flink_args())}


def _one(pattern: str) -> str:
    matches = glob.glob(pattern)
    assert len(matches) == 1, (pattern, matches)
    return matches[0]


def _record_hashes(pattern: str) -> collections.Counter:
    files = sorted(glob.glob(pattern))
    assert files, pattern
    return collections.Counter(hashlib.sha256(r.numpy()).hexdigest()
                               for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def _lines(pattern: str) -> collections.Counter:
    return collections.Counter(json.dumps(json.loads(line), sort_keys=True)
                               for path in glob.glob(pattern) for line in open(path) if line.strip())


def _output(root: str, component: str, key: str) -> str:
    return _one(os.path.join(root, component, key, "*"))


@pytest.mark.parametrize("component,key", [("Ingest", "examples"), ("ClipGen", "clips")])
def test_flink_writes_the_same_records_as_the_direct_runner(runs, component, key):
    for split in ("train", "eval"):
        direct = _record_hashes(os.path.join(_output(runs["direct"], component, key), f"Split-{split}", "*"))
        flink = _record_hashes(os.path.join(_output(runs["flink"], component, key), f"Split-{split}", "*"))
        assert flink == direct, (component, split, sum(direct.values()), sum(flink.values()))
        assert sum(direct.values()) >= 8      # 8 demo eval videos; train has more


@pytest.mark.parametrize("component", ["Ingest", "ClipGen"])
def test_flink_dead_letters_and_accounting_match_the_direct_runner(runs, component):
    letters = {name: _lines(os.path.join(_output(root, component, "dead_letter"), "Split-*", "*.jsonl"))
               for name, root in runs.items()}
    assert letters["flink"] == letters["direct"]
    assert sum(letters["direct"].values()) >= 3          # the corpus's bad records reach this stage's dead letter
    stats_file = {"Ingest": ("ingest_stats", "ingest_stats.json"), "ClipGen": ("clip_stats", "clip_stats.json")}
    key, name = stats_file[component]
    stats = {runner: json.load(open(os.path.join(_output(root, component, key), name)))
             for runner, root in runs.items()}
    counts = {runner: s["inputs"] if component == "Ingest" else s["splits"] for runner, s in stats.items()}
    for split, split_counts in counts["direct"].items():
        flink_counts = counts["flink"][split]
        for field in ("records_in", "records_ok", "videos_in", "videos_ok", "clips_out", "rejected",
                      "rejected_by_reason"):
            if field in split_counts:
                assert flink_counts[field] == split_counts[field], (component, split, field)
        unit = "records" if component == "Ingest" else "videos"
        assert flink_counts[f"{unit}_in"] == flink_counts[f"{unit}_ok"] + flink_counts["rejected"]


def test_flink_transform_statistics_match_the_direct_runner(runs):
    """Transform's analyzers (per-channel mean and mean of squares over every clip), read back through the
    transform layer: a black clip maps to -mean/std, a white one to (1 - mean)/std."""
    import tensorflow_transform as tft

    from components.video_format import ClipKeys

    def statistics(root):
        output = tft.TFTransformOutput(_output(root, "Transform", "transform_graph"))
        layer = output.transform_features_layer()
        frames = tf.stack([tf.io.serialize_tensor(tf.fill([T, H, W, 3], tf.constant(v, tf.uint8))) for v in (0, 255)])
        out = layer({ClipKeys.FRAMES: frames, ClipKeys.VIDEO_ID: tf.constant([b"black", b"white"])})["frames"]
        black, white = out[0, 0, 0, 0].numpy(), out[1, 0, 0, 0].numpy()
        std = 1.0 / (white - black)
        return -black * std, std

    (direct_mean, direct_std), (flink_mean, flink_std) = statistics(runs["direct"]), statistics(runs["flink"])
    assert direct_mean.shape == (3,) and (direct_std > 0).all()
    tf.debugging.assert_near(flink_mean, direct_mean, rtol=1e-5, atol=1e-6)
    tf.debugging.assert_near(flink_std, direct_std, rtol=1e-5, atol=1e-6)


# ---- retry-safe sinks -------------------------------------------------------------------------------------------

def _fail_once_writer(marker: str, after: int):
    """ClipGen's clip writer, whose sink raises once, after writing ``after`` records of a file, while ``marker``
    exists (removed then); before raising it notes in ``<marker>.partial`` the temporary files it leaves. Local
    classes: pickled by value to Flink's SDK workers."""
    import apache_beam as beam
    from isal import isal_zlib

    from components import tfrecord_io

    class FailOnceSink(tfrecord_io._GzipTFRecordSink):
        def open(self, temp_path):
            self._written = 0
            return super().open(temp_path)

        def write_encoded_record(self, file_handle, encoded_value):
            super().write_encoded_record(file_handle, encoded_value)
            self._written += 1
            if self._written == after and os.path.exists(marker):
                os.remove(marker)
                file_handle._raw.write(file_handle._compressor.flush(isal_zlib.Z_SYNC_FLUSH))   # on disk now
                file_handle._raw.flush()
                temp = glob.glob(os.path.join(os.path.dirname(self.file_path_prefix.get()), "beam-temp-*", "*"))
                with open(marker + ".partial", "w") as f:
                    json.dump({p: os.path.getsize(p) for p in temp}, f)
                raise RuntimeError("injected failure after writing part of a bundle")

    class FailOnceWriter(beam.PTransform):
        def __init__(self, prefix, level, num_shards=0):
            super().__init__()
            self._sink = FailOnceSink(prefix, level, num_shards)

        def expand(self, records):
            return records | beam.io.Write(self._sink)

    return FailOnceWriter


def _clip_job(root: str, beam_args: list, writers: dict) -> None:
    """ClipGen's Beam branch (components/clipgen/transforms.clip_split) over the same videos, once per writer."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.clipgen import transforms
    from components.clipgen.extract import ClipGenConfig

    config = ClipGenConfig(num_frames=T, frame_stride=1, height=H, width=W, labels=("a", "b"),
                           clips_per_video_train=2, clips_per_video_eval=1, seed=0)
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    for name, (writer, shards) in writers.items():
        transforms.clip_split(pipeline, "train", [os.path.join(os.path.dirname(root), "videos", "*")], config,
                              os.path.join(root, name, "clips"), os.path.join(root, name, "dead_letter"),
                              os.path.join(root, name, "stats.json"), clip_writer=writer, num_shards=shards,
                              tag=name)
    pipeline.run().wait_until_finish()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "clips"))
    from clip_test_data import video_record
    root = str(tmp_path_factory.mktemp("retry"))
    os.makedirs(os.path.join(root, "videos"))
    with tf.io.TFRecordWriter(os.path.join(root, "videos", "v.tfrecord")) as writer:
        for i in range(16):
            writer.write(video_record(f"v{i}", label="ab"[i % 2], seed=i))
    return root


def _files(folder: str) -> list:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_a_bundle_that_fails_after_writing_part_of_its_clips_leaves_no_duplicate_or_partial_file(videos):
    from components.tfrecord_io import WriteToGzipTFRecord
    direct_root, flink_root = os.path.join(videos, "direct"), os.path.join(videos, "flink")
    _clip_job(direct_root, DIRECT, {"sharded": (WriteToGzipTFRecord, 2), "bundles": (WriteToGzipTFRecord, 0)})
    writers = {}
    for name, shards in (("sharded", 2), ("bundles", 0)):   # the pipeline's fixed shards, and one file per bundle
        marker = os.path.join(videos, f"fail-{name}")
        open(marker, "w").close()
        writers[name] = (_fail_once_writer(marker, after=3), shards)
    _clip_job(flink_root, flink_args(), writers)

    for name in ("sharded", "bundles"):
        marker = os.path.join(videos, f"fail-{name}")
        assert not os.path.exists(marker), f"{name}: the injected failure never ran"
        partial = json.load(open(marker + ".partial"))
        assert partial and all(size > 0 for size in partial.values()), partial   # it had written part of its output
        clips = os.path.join(flink_root, name, "clips")
        files = _files(clips)
        assert all(f.startswith(f"data_tfrecord-{name}-") and f.endswith(".gz") for f in files), files
        assert not glob.glob(os.path.join(videos, "**", "beam-temp-*"), recursive=True)
        flink = _record_hashes(os.path.join(clips, "*"))
        direct = _record_hashes(os.path.join(direct_root, name, "clips", "*"))
        assert flink == direct and sum(flink.values()) == 32, (name, sum(flink.values()))
        assert json.load(open(os.path.join(flink_root, name, "stats.json")))["clips_out"] == 32
        if shards := dict(sharded=2, bundles=0)[name]:
            assert len(files) == shards


def test_a_write_deletes_what_an_earlier_failed_attempt_left_in_its_folder(videos):
    """A pod retry writes into the same output folder: the earlier attempt's temporary folder and its final shards
    of another shard count go; files of other names stay."""
    from components.tfrecord_io import WriteToGzipTFRecord
    root = os.path.join(videos, "rerun")
    clips = os.path.join(root, "span", "clips")
    os.makedirs(os.path.join(clips, "beam-temp-data_tfrecord-span-" + "0" * 32))
    stale = [os.path.join(clips, "beam-temp-data_tfrecord-span-" + "0" * 32, "partial.gz"),
             os.path.join(clips, "data_tfrecord-span-00000-of-00003.gz"),
             os.path.join(clips, "data_tfrecord-span-00002-of-00003.gz")]
    kept = [os.path.join(clips, "data_tfrecord-other-00000-of-00001.gz"), os.path.join(clips, "README")]
    for path in stale + kept:
        with open(path, "wb") as f:
            f.write(b"left by an earlier attempt")
    _clip_job(root, DIRECT, {"span": (WriteToGzipTFRecord, 2)})
    assert _files(clips) == sorted(["README", "data_tfrecord-other-00000-of-00001.gz",
                                    "data_tfrecord-span-00000-of-00002.gz", "data_tfrecord-span-00001-of-00002.gz"])
    assert sum(_record_hashes(os.path.join(clips, "data_tfrecord-span-*")).values()) == 32


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def test_the_flink_job_server_dies_with_the_process_that_started_it_even_by_sigkill():
    """A run-local killed hard (OOM, a pod's hard stop) leaves no JVM: the job server gets SIGKILL with its parent."""
    import signal
    import subprocess
    import sys
    import time

    from components.beam_workers import arg_value
    jar = arg_value(flink_args(), "--flink_job_server_jar")
    code = ("import time; from components import beam_workers as b; "
            f"s = b._SharedJobServer({jar!r}, '[local]', None); s._ensure_running(); "
            "print(s.process.pid, flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        jvm = int(child.stdout.readline())
        assert _alive(jvm)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        deadline = time.monotonic() + 30
        while _alive(jvm) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(jvm), f"job server {jvm} outlived its killed parent"
    finally:
        child.kill()
