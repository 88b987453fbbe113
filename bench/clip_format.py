"""Measures the clip data path and prints markdown tables.

  python -m bench.clip_format [--only format|clipgen|transform] [--out bench/out/clip_format]

* format: the two clip frame formats (clips.frame_format, components/video_format.py): raw (one uint8 TensorProto
  per clip) and jpeg (one JPEG per frame): bytes per clip on disk as ClipGen writes them, encode cost (ClipGen
  side), in-graph decode cost and full read cost per clip (tf.data: gunzip + parse + decode, the Transform graph's
  decoder), and JPEG fidelity, for 8x32x32, 8x64x64 and 16x112x112 clips.
* clipgen: ClipGen's Beam branch on the demo dataset (pipeline.demo_data), clips/s and frames/s, against raw
  tf.io.decode_jpeg and cv2 decode frames/s on the same JPEG frames, measured in the same run.
* transform: TFX Transform with materialize=True vs False on the demo clips (LocalDagRunner): component time,
  bytes written, and the Trainer's read rate either way (materialized floats vs raw clips + the TFT layer).

Timings on a shared machine are noisy: each figure is the best of a few repeats.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.frame_formats import DEFAULT_JPEG_QUALITY, JPEG, RAW  # noqa: E402
from components.tfrecord_io import DEFAULT_COMPRESSION_LEVEL, _GzipStream, encode_record  # noqa: E402
from components.video_format import ClipKeys, clip_feature_spec, decode_frames_tensor, make_clip_example, parse_video  # noqa: E402,E501

logger = logging.getLogger("bench.clip_format")

DEMO_CLIPS = dict(num_frames=8, frame_stride=1, height=64, width=64, clips_per_video_train=4, clips_per_video_eval=3)
BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def du(path: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(p))


# ---- format -----------------------------------------------------------------------------------------------

def demo_like_clips(num_clips: int, t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Clips cut from the demo generator's videos (object on textured background, pixel noise)."""
    from pipeline.demo_data import DEMO_CLASSES, make_demo_video
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(num_clips):
        video = make_demo_video(DEMO_CLASSES[i % len(DEMO_CLASSES)], rng, frame_range=(t, t + 8),
                                side_range=(max(h, w), max(h, w) + 32))
        top, left = (video.shape[1] - h) // 2, (video.shape[2] - w) // 2
        clips.append(video[:t, top:top + h, left:left + w])
    return np.stack(clips)


def write_records(path: str, records: list[bytes], level: int | None = DEFAULT_COMPRESSION_LEVEL) -> int:
    """Records as ClipGen's sink writes them (ISA-L gzip at ``level``; None: uncompressed); the file's bytes."""
    with open(path, "wb") as f:
        stream = _GzipStream(f, level) if level is not None else f
        for record in records:
            stream.write(encode_record(record))
        stream.close()
    return os.path.getsize(path)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def alternating_best(fns: dict, rounds: int = 5) -> dict:
    """Best time of each callable over ``rounds``, the callables alternating within each round."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_format(out_dir: str, quality: int = DEFAULT_JPEG_QUALITY) -> list[dict]:
    """The two built clip frame formats (clips.frame_format: video_format.clip_frames_bytes), written as ClipGen
    writes them and read back through video_format.decode_frames_tensor, the decoder of the Transform graph that
    the Trainer's input and the serving signatures run. Formats alternate within each timing round."""
    rows = []
    for (t, h, w), num_clips in (((8, 32, 32), 256), ((8, 64, 64), 128), ((16, 112, 112), 48)):
        clips = demo_like_clips(num_clips, t, h, w)
        shape = (t, h, w, 3)
        records = {fmt: [make_clip_example(c, "a", "v", 0, frame_format=fmt, jpeg_quality=quality).SerializeToString()
                         for c in clips] for fmt in (RAW, JPEG)}
        encode = alternating_best({fmt: (lambda fmt=fmt: [make_clip_example(c, "a", "v", 0, frame_format=fmt,
                                                                            jpeg_quality=quality) for c in clips])
                                   for fmt in (RAW, JPEG)}, rounds=3)
        paths = {fmt: os.path.join(out_dir, f"{fmt}_{t}x{h}x{w}.tfrecord.gz") for fmt in (RAW, JPEG)}
        disk = {fmt: write_records(paths[fmt], records[fmt]) / num_clips for fmt in (RAW, JPEG)}
        spec = {ClipKeys.FRAMES: tf.io.FixedLenFeature([], tf.string)}

        @tf.function
        def decode(serialized):
            return decode_frames_tensor(tf.io.parse_example(serialized, spec)[ClipKeys.FRAMES], shape)

        decoded = {fmt: decode(tf.constant(records[fmt])).numpy() for fmt in (RAW, JPEG)}
        assert np.array_equal(decoded[RAW], clips)

        def read_all(path):
            ds = (tf.data.TFRecordDataset(path, compression_type="GZIP").batch(16)
                  .map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))
            return lambda: sum(int(b.shape[0]) for b in ds)

        batches = {fmt: tf.constant(records[fmt]) for fmt in (RAW, JPEG)}
        in_graph = alternating_best({fmt: (lambda fmt=fmt: decode(batches[fmt])) for fmt in (RAW, JPEG)})
        read = alternating_best({fmt: read_all(paths[fmt]) for fmt in (RAW, JPEG)})
        rows.append({
            "clip": f"{t}x{h}x{w}x3", "pixel_bytes": t * h * w * 3, "quality": quality,
            **{f"{fmt}_bytes": disk[fmt] for fmt in (RAW, JPEG)},
            **{f"encode_{fmt}_ms": encode[fmt] / num_clips * 1e3 for fmt in (RAW, JPEG)},
            **{f"decode_{fmt}_ms": in_graph[fmt] / num_clips * 1e3 for fmt in (RAW, JPEG)},
            **{f"read_{fmt}_ms": read[fmt] / num_clips * 1e3 for fmt in (RAW, JPEG)},
            "jpeg_psnr_db": psnr(decoded[JPEG], clips),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| clip | clips.frame_format | bytes/clip on disk (ClipGen's gzip level 1) | encode ms/clip | "
             "in-graph decode ms/clip | read+decode ms/clip (tf.data) | fidelity |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for fmt, what, fidelity in ((RAW, "raw: uint8 TensorProto", "lossless"),
                                    (JPEG, f"jpeg: JPEG q{r['quality']} per frame", f"PSNR {r['jpeg_psnr_db']:.1f} dB")):
            lines.append(f"| {r['clip']} | {what} | {r[f'{fmt}_bytes']:,.0f} ({r[f'{fmt}_bytes'] / r['pixel_bytes']:.0%} "
                         f"of the pixels) | {r[f'encode_{fmt}_ms']:.3f} | {r[f'decode_{fmt}_ms']:.3f} | "
                         f"{r[f'read_{fmt}_ms']:.3f} | {fidelity} |")
    return "\n".join(lines)


# ---- clipgen ----------------------------------------------------------------------------------------------

def demo_data(out_dir: str) -> str:
    from pipeline.demo_data import generate_demo_data
    data_dir = os.path.join(out_dir, "demo_data")
    if not glob.glob(os.path.join(data_dir, "train", "*.tfrecord")):
        summary = generate_demo_data(data_dir)
        logger.info("demo data: %d videos, %d frames, %.1f MB", summary.num_train_videos + summary.num_eval_videos,
                    summary.num_frames, summary.megabytes)
    return data_dir


def demo_labels(data_dir: str) -> list[str]:
    from components.video_format import LabelMap
    return LabelMap.load(data_dir).labels


def bench_clipgen(out_dir: str) -> dict:
    import apache_beam as beam

    from components.clipgen import ClipGenConfig, extract_clips, transforms
    from components.video_format import LabelMap

    data_dir = demo_data(out_dir)
    config = ClipGenConfig(labels=tuple(demo_labels(data_dir)), **DEMO_CLIPS)
    records = {split: [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(f"{data_dir}/{split}/*")))]
               for split in ("train", "eval")}
    jpegs = [f for split in records.values() for r in split for f in parse_video(r).jpeg_frames]

    # ClipGen's Beam branch, both splits in one pipeline, as the executor runs it.
    work = os.path.join(out_dir, "clipgen")
    shutil.rmtree(work, ignore_errors=True)
    pipeline = beam.Pipeline(argv=BEAM_ARGS)
    for split in records:
        transforms.clip_split(pipeline, split, [f"{data_dir}/{split}/*"], config, f"{work}/clips/{split}",
                              f"{work}/dead/{split}", f"{work}/stats-{split}.json")
    start = time.perf_counter()
    pipeline.run().wait_until_finish()
    beam_s = time.perf_counter() - start
    stats = {split: json.load(open(f"{work}/stats-{split}.json")) for split in records}
    clips = sum(s["clips_out"] for s in stats.values())
    decoded = sum(s["frames_decoded"] for s in stats.values())

    # The same per-video work without Beam: the per-core ceiling of the extraction itself.
    label_map = LabelMap(config.labels)

    def extract_all():
        return [c for split, rs in records.items() for r in rs for c in extract_clips(r, split, config, label_map).clips]

    extract_s = best_of(extract_all, 2)
    # Beam's GZIP sink compresses with zlib at the default level; timed alone on the same clip records.
    import zlib
    clip_records = extract_all()
    gzip_s = best_of(lambda: [zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 31).compress(c)
                              for c in clip_records], 2)
    clip_bytes = sum(len(c) for c in clip_records)
    del clip_records

    # Raw decoding of every JPEG frame of the dataset (ClipGen decodes only the frames its clips use).
    import cv2
    cv2_s = best_of(lambda: [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs], 2)
    jpeg_tensor = tf.constant(jpegs)

    @tf.function
    def tf_decode(batch):
        return tf.map_fn(lambda s: tf.shape(tf.io.decode_jpeg(s, channels=3)), batch,
                         fn_output_signature=tf.TensorSpec([3], tf.int32))

    tf_decode(jpeg_tensor[:8])
    tf_s = best_of(lambda: tf_decode(jpeg_tensor), 2)
    ds = tf.data.Dataset.from_tensor_slices(jpeg_tensor).map(
        lambda s: tf.io.decode_jpeg(s, channels=3), num_parallel_calls=tf.data.AUTOTUNE)
    tf_data_s = best_of(lambda: sum(1 for _ in ds), 2)
    return {
        "videos": sum(s["videos_in"] for s in stats.values()), "rejected": sum(s["rejected"] for s in stats.values()),
        "clips": clips, "clip_frames": clips * config.num_frames, "decoded": decoded, "dataset_frames": len(jpegs),
        "beam_s": beam_s, "extract_s": extract_s, "gzip_s": gzip_s, "clip_mb": clip_bytes / 1e6, "cv2_s": cv2_s, "tf_s": tf_s, "tf_data_s": tf_data_s,
    }


def clipgen_table(r: dict) -> str:
    return "\n".join([
        f"Demo dataset: {r['videos']} videos ({r['rejected']} rejected), {r['dataset_frames']} JPEG frames; "
        f"{r['clips']} clips 8x64x64 = {r['clip_frames']} clip frames from {r['decoded']} decoded frames.",
        "",
        "| what | seconds | clips/s | clip frames/s | decoded frames/s |",
        "|---|---|---|---|---|",
        f"| ClipGen Beam branch (DirectRunner in_memory, 1 worker, start-up included) | {r['beam_s']:.2f} | "
        f"{r['clips'] / r['beam_s']:.0f} | {r['clip_frames'] / r['beam_s']:.0f} | {r['decoded'] / r['beam_s']:.0f} |",
        f"| within it: gzip alone (zlib level 6, as Beam's GZIP sink) of the {r['clip_mb']:.0f} MB of clip records | "
        f"{r['gzip_s']:.2f} | {r['clips'] / r['gzip_s']:.0f} | | |",
        f"| extract_clips loop, no Beam (1 core) | {r['extract_s']:.2f} | {r['clips'] / r['extract_s']:.0f} | "
        f"{r['clip_frames'] / r['extract_s']:.0f} | {r['decoded'] / r['extract_s']:.0f} |",
        f"| cv2.imdecode, every frame of the dataset | {r['cv2_s']:.2f} | | | {r['dataset_frames'] / r['cv2_s']:.0f} |",
        f"| tf.io.decode_jpeg (tf.function map_fn), every frame | {r['tf_s']:.2f} | | | "
        f"{r['dataset_frames'] / r['tf_s']:.0f} |",
        f"| tf.io.decode_jpeg (tf.data AUTOTUNE), every frame | {r['tf_data_s']:.2f} | | | "
        f"{r['dataset_frames'] / r['tf_data_s']:.0f} |",
    ])


# ---- transform --------------------------------------------------------------------------------------------

def _transform_pipeline(root: str, data_dir: str, labels: list[str], materialize: bool):
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    from components.clipgen import ClipGen
    from components.clipgen.schema import write_clip_schema

    example_gen = tfx.components.ImportExampleGen(
        input_base=data_dir, payload_format=example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="train", pattern="train/*"),
                                             tfx.proto.Input.Split(name="eval", pattern="eval/*")]))
    clipgen = ClipGen(examples=example_gen.outputs["examples"], labels=labels, **DEMO_CLIPS)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=write_clip_schema(os.path.join(root, "schema")))
    transform = tfx.components.Transform(
        examples=clipgen.outputs["clips"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="components.transform_module.preprocessing_fn",
        custom_config={"clip_shape": clipgen.clip_shape},
        materialize=materialize, disable_statistics=True)
    return tfx.dsl.Pipeline(
        pipeline_name="clip-bench", pipeline_root=os.path.join(root, "pipeline"),
        components=[example_gen, clipgen, schema_gen, transform], enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(root, "metadata.sqlite")),
        beam_pipeline_args=BEAM_ARGS)


def _latest_execution_seconds(metadata_path: str, node_suffix: str) -> float:
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx
    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    runs = [e for t in store.get_execution_types() if t.name.endswith(node_suffix)
            for e in store.get_executions_by_type(t.name)]
    latest = max(runs, key=lambda e: e.id)
    return (latest.last_update_time_since_epoch - latest.create_time_since_epoch) / 1e3


def _read_rate(dataset: tf.data.Dataset, repeats: int = 2) -> tuple[int, float]:
    count = sum(int(b["frames"].shape[0]) for b in dataset)
    return count, best_of(lambda: sum(int(b["frames"].shape[0]) for b in dataset), repeats)


def bench_transform(out_dir: str) -> dict:
    import tensorflow_transform as tft
    from tfx import v1 as tfx

    data_dir = demo_data(out_dir)
    labels = demo_labels(data_dir)
    root = os.path.join(out_dir, "transform")
    shutil.rmtree(root, ignore_errors=True)
    result = {}
    for materialize in (True, False):   # upstream components are cached on the second run
        start = time.perf_counter()
        tfx.orchestration.LocalDagRunner().run(_transform_pipeline(root, data_dir, labels, materialize))
        result[materialize] = {"run_s": time.perf_counter() - start,
                               "transform_s": _latest_execution_seconds(os.path.join(root, "metadata.sqlite"),
                                                                        "Transform")}
    pipeline_root = os.path.join(root, "pipeline")
    graphs = sorted(glob.glob(f"{pipeline_root}/Transform/transform_graph/*"), key=lambda p: int(p.rsplit("/", 1)[1]))
    materialized = glob.glob(f"{pipeline_root}/Transform/transformed_examples/*")
    clips_dir = glob.glob(f"{pipeline_root}/ClipGen/clips/*")[0]
    result[True]["bytes"] = du(materialized[0]) + du(graphs[0])
    result[False]["bytes"] = du(graphs[-1])
    result["clips_bytes"] = du(clips_dir)

    # What the Trainer pays per epoch of the train split either way (batch 32, tf.data, same parallelism).
    tft_output = tft.TFTransformOutput(graphs[-1])
    spec = tft_output.transformed_feature_spec()
    materialized_ds = (tf.data.TFRecordDataset(glob.glob(f"{materialized[0]}/Split-train/*"), compression_type="GZIP")
                       .batch(32).map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
                       .prefetch(2))
    layer = tft_output.transform_features_layer()
    raw_spec = clip_feature_spec(with_label=True)
    raw_ds = (tf.data.TFRecordDataset(glob.glob(f"{clips_dir}/Split-train/*"), compression_type="GZIP")
              .batch(32).map(lambda s: layer(tf.io.parse_example(s, raw_spec)), num_parallel_calls=tf.data.AUTOTUNE)
              .prefetch(2))
    result["train_clips"], result[True]["read_s"] = _read_rate(materialized_ds)
    _, result[False]["read_s"] = _read_rate(raw_ds)
    return result


def transform_table(r: dict) -> str:
    n = r["train_clips"]
    lines = [f"Demo clips: {r['clips_bytes'] / 1e6:.1f} MB of gzipped clip TFRecords; {n} train clips read per epoch.",
             "",
             "| materialize | Transform component s | bytes written by Transform | Trainer read s/epoch (train) | "
             "clips/s |",
             "|---|---|---|---|---|"]
    for m, what in ((True, "True (floats on disk)"), (False, "False (TFT layer in tf.data)")):
        lines.append(f"| {what} | {r[m]['transform_s']:.1f} | {r[m]['bytes'] / 1e6:.2f} MB | {r[m]['read_s']:.2f} | "
                     f"{n / r[m]['read_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("format", "clipgen", "transform"))
    parser.add_argument("--out", default=os.path.join("bench", "out", "clip_format"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    os.makedirs(args.out, exist_ok=True)
    sections = [args.only] if args.only else ["format", "clipgen", "transform"]
    report = []
    if "format" in sections:
        report += ["### Clip frame formats: raw vs jpeg", "", format_table(bench_format(args.out)), ""]
    if "clipgen" in sections:
        report += ["### ClipGen throughput (demo data)", "", clipgen_table(bench_clipgen(args.out)), ""]
    if "transform" in sections:
        report += ["### Transform: materialize True vs False (demo data)", "", transform_table(bench_transform(args.out)),
                   ""]
    print("\n".join(report))


if __name__ == "__main__":
    main()
