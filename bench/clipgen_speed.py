"""ClipGen against the JPEG decode limit, and ClipGen's peak memory on 1x and 4x the demo dataset.

* rate: ClipGen's Beam branch (both splits, as the executor builds it) in decoded frames/s, against
  tf.io.decode_jpeg on every frame of the same dataset (tf.data, parallel map over all cores), interleaved.
  Two Beam modes are measured: in_memory with one worker, and multi_processing with one worker per core
  (the demo's setting). Each runs on the dataset and on N copies of it (N = 8 in the full config): the
  whole-job rate includes a fixed start-up (Beam, worker processes, TF imports) that dominates at demo size,
  so the steady-state rate is the difference of the two, (frames_Nx - frames_1x) / (seconds_Nx - seconds_1x):
  what each further video costs. (With 4 copies that difference was only ~1.6 s of a 10 s job, and the
  steady-state figure moved between 37% and 67% of the decode limit from run to run.) The lever row:
  ClipGen's clip writer (ISA-L gzip, components.tfrecord_io) against Beam's stock ``WriteToTFRecord``
  (zlib level 6) in the same job, records compared.
* memory: the same Beam job in a child process (``python -m bench.clipgen_speed --rss-job``) on the dataset
  and on 4 copies of it; peak of the summed RSS of the job process and its Beam worker processes (sampled).
  Streaming ClipGen must stay flat.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import sys
import time

from bresnet._keras import keras  # noqa: F401  (Keras mode first)
import tensorflow as tf

from bench.timing import interleaved, json_child

# The runner is named for clarity. (Beam 2.74's DirectRunner still tries its Prism runner first, named or not: offline
# that fails at once and it falls back; `--update_compatibility_version` set would skip Prism, not used here.)
BEAM_MODES = {
    "in_memory_1": ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "multi_processing": ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                         f"--direct_num_workers={os.cpu_count() or 1}"],
}


def demo_dataset(work: str, videos_per_class: int) -> str:
    """The demo dataset (pipeline.demo_data, seeded) in ``work``, generated once."""
    from pipeline.demo_data import generate_demo_data
    data_dir = os.path.join(work, f"demo_data_{videos_per_class}")
    if not os.path.exists(os.path.join(data_dir, "label_map.txt")):
        generate_demo_data(data_dir, videos_per_class=videos_per_class)
    return data_dir


def replicated(data_dir: str, factor: int, work: str) -> str:
    """``data_dir`` with every record file present ``factor`` times (hard links when possible)."""
    out = os.path.join(work, f"{os.path.basename(data_dir)}_x{factor}")
    if os.path.exists(os.path.join(out, "label_map.txt")):
        return out
    for split in ("train", "eval"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for path in sorted(glob.glob(os.path.join(data_dir, split, "*"))):
            for k in range(factor):
                target = os.path.join(out, split, f"copy{k}-{os.path.basename(path)}")
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copyfile(path, target)
    shutil.copyfile(os.path.join(data_dir, "label_map.txt"), os.path.join(out, "label_map.txt"))
    return out


def clip_config(data_dir: str):
    """ClipGen's settings of the demo run (pipeline.config.ClipConfig defaults)."""
    from components.clipgen import ClipGenConfig
    from components.video_format import LabelMap
    from pipeline.config import ClipConfig
    clips = ClipConfig()
    return ClipGenConfig(num_frames=clips.num_frames, frame_stride=clips.frame_stride, height=clips.height,
                         width=clips.width, clips_per_video_train=clips.clips_per_video_train,
                         clips_per_video_eval=clips.eval_clips_per_video, eval_crops=clips.eval_crops, seed=clips.seed,
                         labels=tuple(LabelMap.load(data_dir).labels))


def beam_zlib_writer(prefix: str, compression_level: int):
    """Beam's stock gzipped TFRecord writer (zlib level 6 whatever ``compression_level`` says): the baseline."""
    import apache_beam as beam
    from apache_beam.io.filesystem import CompressionTypes
    return beam.io.WriteToTFRecord(prefix, file_name_suffix=".gz", compression_type=CompressionTypes.GZIP)


def run_clipgen(data_dir: str, out: str, beam_args: list[str], stock_writer: bool = False) -> dict:
    """ClipGen's Beam branch for both splits; seconds (start-up included), clips and decoded frames.
    ``stock_writer``: clip files written by Beam's WriteToTFRecord instead of ClipGen's writer."""
    import apache_beam as beam

    from components.clipgen import transforms
    from pipeline.config import ClipConfig
    config = clip_config(data_dir)
    writer = beam_zlib_writer if stock_writer else transforms.WriteToGzipTFRecord
    shutil.rmtree(out, ignore_errors=True)
    pipeline = beam.Pipeline(argv=list(beam_args))
    for split in ("train", "eval"):
        transforms.clip_split(pipeline, split, [os.path.join(data_dir, split, "*")], config,
                              f"{out}/clips/{split}", f"{out}/dead/{split}", f"{out}/stats-{split}.json",
                              compression_level=ClipConfig().compression_level, clip_writer=writer)
    start = time.perf_counter()
    pipeline.run().wait_until_finish()
    seconds = time.perf_counter() - start
    stats = [json.load(open(f"{out}/stats-{split}.json")) for split in ("train", "eval")]
    return {"seconds": seconds, "clips": sum(s["clips_out"] for s in stats),
            "frames_decoded": sum(s["frames_decoded"] for s in stats),
            "videos": sum(s["videos_in"] for s in stats), "rejected": sum(s["rejected"] for s in stats)}


def jpeg_frames(data_dir: str) -> list[bytes]:
    from components.video_format import parse_video
    files = sorted(glob.glob(os.path.join(data_dir, "*", "*.tfrecord*")))
    return [f for r in tf.data.TFRecordDataset(files) for f in parse_video(r.numpy()).jpeg_frames]


DECODE_PASSES = 4   # one pass over the demo's frames takes ~0.5 s: too short to time steadily on a shared machine


def decode_fn(jpegs: list[bytes], passes: int = DECODE_PASSES):
    """Decodes every frame ``passes`` times with tf.io.decode_jpeg, parallel over all cores."""
    dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).repeat(passes)
               .map(lambda s: tf.reduce_sum(tf.shape(tf.io.decode_jpeg(s, channels=3))),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .batch(256))

    def run():
        return sum(int(tf.size(b)) for b in dataset)
    return run


def bench_rate(data_dir: str, work: str, repeats: int, modes=tuple(BEAM_MODES), factor: int = 4) -> dict:
    """ClipGen's rate against the decode limit per Beam mode, whole-job and steady state; the clip-writer lever."""
    jpegs = jpeg_frames(data_dir)
    datasets = {"x1": data_dir, f"x{factor}": replicated(data_dir, factor, work)}
    runs: dict[str, list[dict]] = {}

    def out_dir(name):
        return os.path.join(work, f"clipgen_{name.replace('/', '_')}")

    def beam_run(name, mode, data, stock_writer=False):
        runs[name] = []

        def run():
            runs[name].append(run_clipgen(data, out_dir(name), BEAM_MODES[mode], stock_writer))
        return run

    fns = {"decode": decode_fn(jpegs)}
    for mode in modes:
        for size, data in datasets.items():
            fns[f"{mode}/{size}"] = beam_run(f"{mode}/{size}", mode, data)
    lever_mode, big = modes[0], f"x{factor}"
    lever = f"{lever_mode}/{big}/stock_writer"
    fns[lever] = beam_run(lever, lever_mode, datasets[big], stock_writer=True)
    fns[f"{modes[0]}/x1"]()  # warm-up: the first Beam job in a process pays one-time imports and set-up
    seconds = interleaved(fns, repeats, warmup=0)
    decode_fps = len(jpegs) * DECODE_PASSES / seconds["decode"]
    result = {"dataset_frames": len(jpegs), "decode_frames_s": decode_fps, "factor": factor}
    for mode in modes:
        small, large = runs[f"{mode}/x1"][-1], runs[f"{mode}/{big}"][-1]
        t_small, t_large = seconds[f"{mode}/x1"], seconds[f"{mode}/{big}"]
        # None when the larger job was not slower (possible only on tiny, noisy configs): no steady state to tell
        steady_fps = ((large["frames_decoded"] - small["frames_decoded"]) / (t_large - t_small)
                      if t_large > t_small else None)
        result[mode] = {
            "clips": small["clips"], "frames_decoded": small["frames_decoded"], "seconds": t_small,
            "frames_s": small["frames_decoded"] / t_small, "clips_s": small["clips"] / t_small,
            "of_decode_limit": small["frames_decoded"] / t_small / decode_fps,
            f"seconds_{big}": t_large, f"frames_decoded_{big}": large["frames_decoded"],
            "startup_s": t_small - small["frames_decoded"] / steady_fps if steady_fps else None,
            "steady_frames_s": steady_fps,
            "steady_clips_s": (large["clips"] - small["clips"]) / (t_large - t_small) if steady_fps else None,
            "steady_of_decode_limit": steady_fps / decode_fps if steady_fps else None}
    best = max(modes, key=lambda m: result[m]["steady_frames_s"] or 0.0)
    result["best_mode"] = best
    result["of_decode_limit"] = result[best]["steady_of_decode_limit"]
    ours, stock = out_dir(f"{lever_mode}/{big}"), out_dir(lever)
    ours_bytes, stock_bytes = _clip_bytes(ours), _clip_bytes(stock)
    result["writer_lever"] = {
        "mode": lever_mode, "dataset": big, "seconds": seconds[f"{lever_mode}/{big}"],
        "baseline_seconds": seconds[lever], "speedup": seconds[lever] / seconds[f"{lever_mode}/{big}"],
        "bytes": ours_bytes, "baseline_bytes": stock_bytes, "size_ratio": ours_bytes / stock_bytes,
        "same_records": _record_digests(ours) == _record_digests(stock)}
    return result


def _record_digests(out: str) -> list[str]:
    """Sorted digests of every clip record ClipGen wrote under ``out`` (shard order is Beam's choice)."""
    import hashlib
    files = sorted(glob.glob(os.path.join(out, "clips", "*", "*.gz")))
    return sorted(hashlib.sha1(r.numpy()).hexdigest() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def _clip_bytes(out: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "clips", "*", "*.gz")))


def peak_rss(data_dir: str, out: str, beam_args: list[str]) -> dict:
    """Runs the ClipGen job in a child process; its peak RSS and that of its own children (Beam workers)."""
    return json_child("bench.clipgen_speed", ["--rss-job", data_dir, out, "--", *beam_args], "ClipGen memory job")


def bench_memory(data_dir: str, work: str, factor: int = 4, mode: str = "multi_processing") -> dict:
    beam_args = BEAM_MODES[mode]
    small = peak_rss(data_dir, os.path.join(work, "rss_x1"), beam_args)
    large = peak_rss(replicated(data_dir, factor, work), os.path.join(work, f"rss_x{factor}"), beam_args)
    return {"factor": factor, "beam_mode": mode, "x1": small, f"x{factor}": large,
            "rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
            "videos_ratio": large["videos"] / max(small["videos"], 1)}


def _rss_job(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rss-job", nargs=2, metavar=("DATA_DIR", "OUT"), required=True)
    parser.add_argument("beam_args", nargs="*")
    args = parser.parse_args(argv)
    data_dir, out = args.rss_job
    sampler = TreeRssSampler()
    sampler.start()
    result = run_clipgen(data_dir, out, args.beam_args)
    sampler.stop()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # kB -> MB (Linux)
    result.update(job_rss_mb=own, peak_rss_mb=max(sampler.peak_mb, own))
    print(json.dumps(result))


class TreeRssSampler:
    """Peak of the summed RSS of this process and all its descendants (Beam's workers), sampled every 0.1 s."""

    def __init__(self, interval_s: float = 0.1):
        import threading
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        import psutil
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:   # a worker that just exited
                pass
        return total / 2 ** 20

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            self._stop.wait(self.interval_s)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()


if __name__ == "__main__":
    _rss_job(sys.argv[1:])
