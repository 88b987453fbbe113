"""Serving rate of the exported model: a float32 export against a bfloat16 one, on this CPU and on an AVX2 CPU.

Issue #11: which precision the serving model computes in is a serving decision (``training.export_precision``,
float32 by default, whatever precision trained the weights). This section measures what that decision costs or
saves on both CPU classes: the same weights exported both ways through the Trainer's own export
(``components.trainer.export.export_serving_model``, Transform layer included), each SavedModel loaded as a server
loads it and its ``serving_frames`` signature called with one uint8 batch, the two timed alternately round by
round. The ratio reported is the median of per-round ratios (float32 seconds ÷ bfloat16 seconds: > 1 means the
bfloat16 export serves faster).

How each CPU class is had here:

- **This CPU**: both exports in one process, alternated (``bench.timing.interleaved_rounds``).
- **AVX2** (a CPU without AVX-512), when this CPU has AVX-512. float32: ``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN
  pick the kernels it picks on such a CPU. bfloat16: TensorFlow hands a bfloat16 op to oneDNN only where cpuid
  shows AVX-512 (``IsBF16SupportedByOneDNNOnThisCPU()`` in tensorflow/core/graph/mkl_graph_util.h tests
  ``CPUFeature::AVX512F``; the oneDNN layout pass otherwise leaves the op to its default kernel, logging "oneDNN
  BFloat16 support are only on platforms with AVX512. Falling back to default implementation"). On an AVX2 CPU a
  bfloat16 model therefore runs on TensorFlow's Eigen kernels. Here cpuid shows AVX-512, so TensorFlow would hand
  the ops to oneDNN, which aborts a bfloat16 convolution under the AVX2 cap. The bfloat16 export is therefore served
  with the oneDNN rewrite off (``TF_ENABLE_ONEDNN_OPTS=0``): the same Eigen kernels an AVX2 CPU runs, and the
  wheel's Eigen code is built for AVX only, so it is the same code on both classes. That setting is per process,
  so each export gets its own server process (``--serve``). The parent alternates them round by round, and each
  one is timed while the other waits.

Both exports must agree before anything is timed: the bfloat16 export's probabilities within ``MAX_PROB_DIFF`` of
the float32 export's on the timed batch.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from bench.timing import child_env, interleaved_rounds, paired_ratios

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
MAX_PROB_DIFF = 0.05   # bfloat16 keeps 8 bits of mantissa: logits move by ~1%, probabilities by far less than this
SIGNATURE = "serving_frames"
# Where this CPU has AVX-512, the environment each export's server gets to behave as on an AVX2 CPU (docstring).
AVX2_SERVERS = {"float32": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
                "bfloat16": {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}}


def cpu_has_avx512() -> bool:
    """What TensorFlow's oneDNN rewrite asks before it takes a bfloat16 op: AVX512F in cpuid, whatever oneDNN's cap."""
    from components.trainer.precision import cpu_flags
    return "avx512f" in cpu_flags()


def clip_name(clip_shape) -> str:
    """"TxHxW", as the benchmark names clip shapes (bench.model_speed.ModelCase.name)."""
    return "x".join(str(d) for d in clip_shape[:3])


# ---- the two exports -----------------------------------------------------------------------------------------

def export_both(work: str, clip_shape, seed: int = 0) -> dict[str, str]:
    """One set of random weights (batch-norm statistics off 0/1) exported as float32 and as bfloat16 serving
    models by the Trainer's export, over a Transform graph analysed on synthetic clips; {precision: export dir}."""
    from bresnet._keras import keras
    import tensorflow as tf

    from bench.input_speed import build_transform_graph
    from bench.model_speed import NUM_CLASSES, randomize_batch_norm
    from components.trainer import export, training
    from components.trainer.config import TrainingConfig
    from components.video_format import make_clip_example

    root = os.path.join(work, "serving_rate", clip_name(clip_shape))
    dirs = {p: os.path.join(root, f"export_{p}") for p in PRECISIONS}
    if all(os.path.exists(os.path.join(d, "saved_model.pb")) for d in dirs.values()):
        return dirs
    labels = tuple(f"class{i}" for i in range(NUM_CLASSES))
    rng = np.random.default_rng(seed)
    clips = os.path.join(root, "clips.tfrecord.gz")
    os.makedirs(root, exist_ok=True)
    with tf.io.TFRecordWriter(clips, "GZIP") as writer:
        for i in range(16):
            frames = rng.integers(0, 256, clip_shape, dtype=np.uint8)
            writer.write(make_clip_example(frames, labels[i % len(labels)], f"video{i}", 0).SerializeToString())
    graph = build_transform_graph([clips], list(labels), clip_shape, os.path.join(root, "transform_graph"),
                                  os.path.join(root, "tft_tmp"))
    keras.utils.set_random_seed(seed)
    source = training.build_model(TrainingConfig(labels=labels, clip_shape=tuple(clip_shape), precision="float32"))
    randomize_batch_norm(source, seed)
    weights = source.get_weights()
    for p, d in dirs.items():
        config = TrainingConfig(labels=labels, clip_shape=tuple(clip_shape), precision="float32", export_precision=p)
        export.export_serving_model(weights, config, graph, d)
    return dirs


def request(clip_shape, batch: int, seed: int = 1):
    """The timed request: ``batch`` uint8 clips."""
    import tensorflow as tf
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (batch, *clip_shape), dtype=np.uint8))


def load_server(export_dir: str):
    """The export's serving_frames signature as a server calls it: (frames) -> probabilities as numpy."""
    import tensorflow as tf
    signature = tf.saved_model.load(export_dir).signatures[SIGNATURE]
    return lambda frames: signature(frames=frames)["probabilities"].numpy()


def _check_agree(probabilities: dict[str, np.ndarray], where: str) -> dict:
    diff = float(np.abs(probabilities["bfloat16"] - probabilities["float32"]).max())
    agreement = float(np.mean(probabilities["bfloat16"].argmax(-1) == probabilities["float32"].argmax(-1)))
    if not diff <= MAX_PROB_DIFF:
        raise AssertionError(f"serving rate {where}: the bfloat16 export's probabilities differ from the float32 "
                             f"export's by {diff:.3g} (> {MAX_PROB_DIFF})")
    return {"max_prob_diff": diff, "top1_agreement": agreement}


def _summary(rounds: dict[str, list[float]], batch: int, checks: dict, how: str) -> dict:
    ratios = paired_ratios(rounds, "float32", "bfloat16")
    return {"how": how, "batch": batch, "rounds": len(ratios),
            **{f"{p}_clips_s": batch / statistics.median(rounds[p]) for p in PRECISIONS},
            "bf16_speedup": statistics.median(ratios), "bf16_speedup_range": [min(ratios), max(ratios)], **checks}


# ---- this CPU: one process ----------------------------------------------------------------------------------

def rate_here(dirs: dict[str, str], clip_shape, batch: int, repeats: int) -> dict:
    frames = request(clip_shape, batch)
    servers = {p: load_server(d) for p, d in dirs.items()}
    checks = _check_agree({p: serve(frames) for p, serve in servers.items()}, "on this CPU")
    rounds = interleaved_rounds({p: (lambda s=serve: s(frames)) for p, serve in servers.items()}, repeats, warmup=2)
    return _summary(rounds, batch, checks, "both exports in this process, alternated")


# ---- AVX2 on an AVX-512 CPU: one server process per export ----------------------------------------------------

def serve_main(export_dir: str, clip_shape, batch: int) -> None:
    """A server process: loads the export, prints its probabilities for the request, then answers each line on
    stdin (a number of calls) with the seconds of each call, as JSON, until stdin closes."""
    serve = load_server(export_dir)
    frames = request(clip_shape, batch)
    out = serve(frames)
    serve(frames)   # warm-up
    print(json.dumps({"probabilities": out.tolist()}), flush=True)
    for line in sys.stdin:
        seconds = []
        for _ in range(int(line)):
            start = time.perf_counter()
            serve(frames)
            seconds.append(time.perf_counter() - start)
        print(json.dumps({"seconds": seconds}), flush=True)


class _Server:
    def __init__(self, export_dir: str, clip_shape, batch: int, env_changes: dict, what: str):
        self.what = what
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.serving_rate", "--serve", export_dir, json.dumps(list(clip_shape)),
             str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(env_changes))

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError(f"serving rate: the {self.what} server exited ({self.proc.wait()}): "
                               f"{self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def call(self, times: int) -> list[float]:
        self.proc.stdin.write(f"{times}\n")
        self.proc.stdin.flush()
        return self.reply()["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rate_avx2(dirs: dict[str, str], clip_shape, batch: int, repeats: int) -> dict:
    servers = {p: _Server(dirs[p], clip_shape, batch, AVX2_SERVERS[p], f"{p} (AVX2)") for p in PRECISIONS}
    try:
        probabilities = {p: np.asarray(s.reply()["probabilities"]) for p, s in servers.items()}
        checks = _check_agree(probabilities, "as on AVX2")
        for s in servers.values():   # one more warm-up call each, then the timed rounds
            s.call(1)
        rounds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for _ in range(repeats):
            for p, s in servers.items():
                rounds[p] += s.call(1)
    finally:
        for s in servers.values():
            s.close()
    env = "; ".join(f"{p}: " + " ".join(f"{k}={v}" for k, v in AVX2_SERVERS[p].items()) for p in PRECISIONS)
    return _summary(rounds, batch, checks, f"one server process per export, alternated ({env})")


def bench_serving(cases, work: str, repeats: int) -> dict:
    """``cases``: (clip shape, batch) pairs. Per case: this CPU's row, and the AVX2 row where this CPU has AVX-512
    (on a CPU without it, this CPU's row is the AVX2 class itself). This CPU's row is left out when this process
    runs with oneDNN capped below bfloat16 on an AVX-512 CPU: TF would hand the bfloat16 export to the capped
    oneDNN, which aborts it, and the AVX2 row measures that class properly."""
    from components.trainer.precision import onednn_capped_below_bfloat16
    results = {}
    avx512 = cpu_has_avx512()
    for clip_shape, batch in cases:
        dirs = export_both(work, clip_shape)
        name = clip_name(clip_shape)
        row = {"this_cpu_has_avx512": avx512}
        if avx512 and onednn_capped_below_bfloat16():
            row["this_cpu_skipped"] = "oneDNN is capped below bfloat16 on an AVX-512 CPU: see the avx2 row"
        else:
            row["this_cpu"] = rate_here(dirs, clip_shape, batch, repeats)
        if avx512:
            row["avx2"] = rate_avx2(dirs, clip_shape, batch, repeats)
        logger.info("serving rate %s: %s", name, json.dumps(row))
        results[name] = row
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=3, metavar=("EXPORT_DIR", "CLIP_SHAPE_JSON", "BATCH"),
                        help="run as one export's server process (see serve_main)")
    parser.add_argument("--work", default="bench/out/work")
    parser.add_argument("--clip", default="16x112x112", help="TxHxW")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve[0], json.loads(args.serve[1]), int(args.serve[2]))
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        shape = (*(int(d) for d in args.clip.split("x")), 3)
        print(json.dumps(bench_serving([(shape, args.batch)], os.path.abspath(args.work), args.repeats), indent=1))
