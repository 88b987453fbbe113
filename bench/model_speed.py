"""Model speed: the project's model against a plain Keras reference of the same architecture, and MFU.

The reference is built here from plain Keras layers (Conv3D (1,k,k) and (t,1,1), BatchNormalization, ReLU,
pooling, Add, Dense), float32, run as Keras runs any model (a tf.function, no XLA), with every weight copied
from the project's model. Its outputs must match the project model's (inference and training mode) before any
time is taken. "fast" is the project model as the Trainer builds and compiles it with its defaults (precision
"auto": bfloat16 on a CPU with AVX512-BF16/AMX, else float32; inference on 2D kernels with folded batch norm);
variants add one lever each: "float32" and "bf16" (whichever precision the defaults do not already compute in)
and "xla" (jit_compile=True).

Timing: each lever (the defaults, each precision, XLA) runs in a fresh child process (``python -m bench.model_speed
--child``) with its own copy of the reference, alternated with it and the matmuls. In one shared process the
levers slowed each other: the bfloat16 model trained at 0.33 s a step at 16x112x112 (batch 8) next to the
reference alone but at 0.63 s once the float32 model, the FLOP count's trace or XLA had run in the same process.

Speed-ups are paired: in every round of a child the reference and the lever are timed side by side, and a lever's
speed-up is the median of those per-round ratios over all rounds of all its children (their range is kept too).
Each lever's child runs ``child_runs`` times (3 in the full config) and each displayed rate keeps its best run: in these
processes one model's training step sometimes ran at about half its rate for the whole process (16x112x112,
batch 8: the reference at 12.6 or 6.3 clips/s, the bfloat16 model at ~21 or 12.6, in the same code and
settings), a state not explained yet, so one child per lever reported bfloat16 training anywhere from 0.95x to
1.91x. Best of 3 compares the two models' full-speed states.

MFU here = achieved model FLOP/s (profiler GFLOPs per clip x clips/s; training counts 3x the forward pass, the
usual forward + two backward products) / the FLOP/s of a large float32 matmul timed in the same rounds; a
bfloat16 model is also divided by a bfloat16 matmul's FLOP/s (its own peak).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics

import numpy as np

from bresnet._keras import keras
import tensorflow as tf

from bench.timing import interleaved_rounds, json_child, paired_ratios
from bresnet import BResNet162Plus1DD, Conv2Plus1D
from bresnet.flops import count_flops

logger = logging.getLogger(__name__)

NUM_CLASSES = 8
TRAIN_FLOPS_FACTOR = 3   # forward + gradient w.r.t. inputs + gradient w.r.t. weights


@dataclasses.dataclass(frozen=True)
class ModelCase:
    clip_shape: tuple[int, int, int, int]
    infer_batch: int
    train_batch: int
    # Levers measured besides the project's defaults; a precision the defaults already compute in is skipped.
    variants: tuple[str, ...] = ("float32", "bf16", "xla")

    @property
    def name(self) -> str:
        t, h, w, _ = self.clip_shape
        return f"{t}x{h}x{w}"


# ---- the plain reference -----------------------------------------------------------------------------------

def build_reference(model: BResNet162Plus1DD, clip_shape) -> keras.Model:
    """The same architecture as plain functional Keras layers, with ``model``'s weights copied in."""
    pairs = []   # (reference layer, project layer) whose weights must be equal

    def conv(x, layer: Conv2Plus1D):
        kt, kh, kw = layer.kernel_size
        st, sh, sw = layer.strides
        spatial = keras.layers.Conv3D(layer.middle_filters, (1, kh, kw), strides=(1, sh, sw), padding=layer.padding,
                                      use_bias=layer.use_bias)
        temporal = keras.layers.Conv3D(layer.filters, (kt, 1, 1), strides=(st, 1, 1), padding=layer.padding,
                                       use_bias=layer.use_bias)
        x = temporal(spatial(x))
        pairs.extend([(spatial, layer.spatial), (temporal, layer.temporal)])
        if layer.normalization == "batch_norm":
            norm = keras.layers.BatchNormalization(axis=-1)
            x = norm(x)
            pairs.append((norm, layer.norm))
        elif layer.normalization is not None:
            raise ValueError(f"reference supports batch_norm only, {layer.name} has {layer.normalization!r}")
        if layer.activation == "relu":
            x = keras.layers.ReLU()(x)
        elif layer.activation is not None:
            raise ValueError(f"reference supports relu only, {layer.name} has {layer.activation!r}")
        return x

    inputs = keras.Input(tuple(clip_shape))
    x = conv(conv(conv(inputs, model.stem), model.stem1), model.stem2)
    x = keras.layers.MaxPool3D(pool_size=2, strides=2, padding="same")(x)
    for block in model.blocks:
        residual = conv(conv(conv(x, block.reduce), block.conv), block.expand)
        shortcut = x
        if block.pool is not None:
            shortcut = keras.layers.AveragePooling3D(block.strides, strides=block.strides, padding="same")(shortcut)
        if block.projection is not None:
            shortcut = conv(shortcut, block.projection)
        x = keras.layers.ReLU()(keras.layers.Add()([residual, shortcut]))
    x = keras.layers.GlobalAveragePooling3D()(x)
    if model.head_dropout is not None:
        x = keras.layers.Dropout(model.head_dropout.rate)(x)
    head = keras.layers.Dense(model.head.units)
    outputs = head(x)
    pairs.append((head, model.head))
    reference = keras.Model(inputs, outputs, name="plain_reference")
    for mine, theirs in pairs:
        mine.set_weights(theirs.get_weights())
    if reference.count_params() != model.count_params():
        raise AssertionError(f"reference has {reference.count_params()} parameters, model {model.count_params()}")
    return reference


def randomize_batch_norm(model: keras.Model, seed: int = 0) -> None:
    """Moving statistics off their 0/1 start, so that the inference comparison covers batch-norm folding, and
    scales and shifts off theirs (the Trainer's classifier starts each block's last scale at 0, which would hide
    that branch from the comparison)."""
    rng = np.random.default_rng(seed)
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.normal(0.0, 0.1, layer.beta.shape))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ---- variants ----------------------------------------------------------------------------------------------

VARIANTS = {"float32": dict(precision="float32"), "bf16": dict(precision="bfloat16"), "xla": dict(jit_compile=True)}


def levers_to_measure(case: ModelCase) -> list[str]:
    """"fast" (the defaults) and the case's variants, less a precision variant the defaults already compute in,
    and less bfloat16 where the CPU (or a oneDNN ISA cap such as ONEDNN_MAX_CPU_ISA=AVX2) has no native bfloat16:
    there oneDNN would emulate it or, under a cap on a bfloat16 CPU, abort the convolution."""
    from components.trainer import precision
    default = precision.compute_precision(training_config(case))
    native_bf16 = precision.cpu_has_bfloat16()
    return ["fast", *(v for v in case.variants if VARIANTS[v].get("precision") != default
                      and (native_bf16 or VARIANTS[v].get("precision") != "bfloat16"))]


def training_config(case: ModelCase, **levers):
    from components.trainer.config import TrainingConfig
    return TrainingConfig(labels=tuple(f"class{i}" for i in range(NUM_CLASSES)), clip_shape=case.clip_shape,
                          batch_size_per_worker=case.train_batch, warmup_cosine=False, **levers)


def build_variant(case: ModelCase, weights, **levers) -> keras.Model:
    """The Trainer's model and compile step (components.trainer.training) with the given levers."""
    from components.trainer import precision, training
    config = training_config(case, **levers)
    model = training.build_model(config)
    model.set_weights(weights)
    training.compile_model(model, config)
    return model


def compile_like_trainer(model: keras.Model, case: ModelCase) -> None:
    """The Trainer's optimizer, loss and metrics, without XLA (the reference takes no compilation tricks)."""
    from components.trainer import precision, training
    training.compile_model(model, training_config(case, precision="float32"))


def matmul_fn(n: int, times: int, dtype: str = "float32"):
    """A large matmul in ``dtype``, ``times`` chained products per call; returns (fn, flops per call).

    Chained (each product feeds the next): identical independent products would be merged into one by
    Grappler's common-subexpression elimination, and the FLOP/s overstated ``times``-fold.
    """
    a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
    b = tf.cast(tf.random.stateless_normal((n, n), seed=(3, 4)) / float(np.sqrt(n)), dtype)  # chain's scale: 1

    @tf.function
    def run():
        x = a
        for _ in range(times):
            x = tf.matmul(x, b)
        return tf.reduce_sum(x)

    return (lambda: run().numpy()), 2 * n ** 3 * times


def bench_lever(case: ModelCase, lever: str, repeats: int, matmul_n: int, seed: int = 0) -> dict:
    """The plain reference against the project model with one lever ("fast": the defaults), in this process."""
    keras.utils.set_random_seed(seed)
    from components.trainer import precision, training
    # Weights come from a float32 build (the reference is float32); the lever's model gets the same ones.
    source = training.build_model(training_config(case, precision="float32"))
    randomize_batch_norm(source, seed)
    weights = source.get_weights()
    reference = build_reference(source, case.clip_shape)
    levers = {} if lever == "fast" else VARIANTS[lever]
    model = build_variant(case, weights, **levers)
    low = precision.compute_precision(training_config(case, **levers)) == "bfloat16"

    rng = np.random.default_rng(seed)
    x_infer = tf.constant(rng.normal(size=(case.infer_batch, *case.clip_shape)).astype("float32"))
    x_train = tf.constant(rng.normal(size=(case.train_batch, *case.clip_shape)).astype("float32"))
    y_train = tf.constant(rng.integers(0, NUM_CLASSES, case.train_batch))

    # Same outputs for the same weights before any timing, inference (moving statistics, folded in the project
    # model) and training mode (batch statistics): float32 to 1e-4. bfloat16 (8-bit mantissa): inference to 5e-2
    # with the same top-1 class on at least 90% of the clips; its training-mode error is reported, not bounded
    # (batch statistics of tiny batches amplify rounding), bfloat16 training is checked on the demo task
    # instead (bench/demo_accuracy.py, bench/README.md).
    expected = reference(x_infer, training=False).numpy()
    out = model(x_infer, training=False).numpy()
    errors = {"inference_max_rel_error": max_relative_error(out, expected),
              "training_max_rel_error": max_relative_error(model(x_train, training=True).numpy(),
                                                           reference(x_train, training=True).numpy())}
    agreement = float(np.mean(out.argmax(-1) == expected.argmax(-1)))
    tolerance = 5e-2 if low else 1e-4
    bounded = errors["inference_max_rel_error"] if low else max(errors.values())
    if bounded > tolerance or (low and agreement < 0.9):
        raise AssertionError(f"{case.name}: {lever} and the plain reference differ: {errors}, top-1 agreement "
                             f"{agreement:.2f} (tolerance {tolerance})")
    compile_like_trainer(reference, case)

    fns = {}
    for name, m in (("reference", reference), (lever, model)):
        # Inference: Keras' predict path is a tf.function of model(x, training=False); XLA variants compile it.
        fn = tf.function(lambda x, m=m: m(x, training=False), jit_compile=bool(m.jit_compile))
        fns[f"infer/{name}"] = (lambda f=fn: f(x_infer).numpy())
        fns[f"train/{name}"] = (lambda m=m: m.train_on_batch(x_train, y_train))
    fns["matmul"], matmul_flops = matmul_fn(matmul_n, 4)
    if low:   # a bfloat16 model is also measured against a bfloat16 matmul: the fp32 one is not its peak
        fns["matmul_bf16"] = matmul_fn(matmul_n, 4, "bfloat16")[0]
    rounds = interleaved_rounds(fns, repeats)
    seconds = {name: statistics.median(ts) for name, ts in rounds.items()}
    result = {"precision": "bfloat16" if low else "float32", "matmul_gflops_s": matmul_flops / seconds["matmul"] / 1e9,
              "checks": {**errors, "top1_agreement": agreement}}
    if low:
        result["matmul_bf16_gflops_s"] = matmul_flops / seconds["matmul_bf16"] / 1e9
    for mode, batch in (("infer", case.infer_batch), ("train", case.train_batch)):
        for name in ("reference", lever):
            result[f"{mode}_{name}_clips_s"] = batch / seconds[f"{mode}/{name}"]
        # The speed-up as a paired measurement: reference time / lever time in each round, both in this process.
        result[f"{mode}_{lever}_speedup_rounds"] = paired_ratios(rounds, f"{mode}/reference", f"{mode}/{lever}")
    return result


def _lever_in_child(case: ModelCase, lever: str, repeats: int, matmul_n: int) -> dict:
    fields = _case_fields(case)
    return json_child("bench.model_speed", ["--child", json.dumps(fields), lever, str(repeats), str(matmul_n)],
                      f"model lever {lever} on {case.name}")


def best_of(parts: list[dict]) -> dict:
    """One child's result with every rate (clips/s, GFLOP/s) replaced by its best over ``parts``, and every list of
    per-round speed-ups joined over ``parts`` (their median is the lever's speed-up)."""
    best = dict(parts[0])
    for key in parts[0]:
        if key.endswith(("_clips_s", "_gflops_s")):
            best[key] = max(part[key] for part in parts)
        if key.endswith("_speedup_rounds"):
            best[key] = [ratio for part in parts for ratio in part[key]]
    return best


def bench_case(case: ModelCase, repeats: int, matmul_n: int, child_runs: int = 1) -> dict:
    """Every lever of ``case`` against the reference, each in ``child_runs`` fresh child processes (see the module
    docstring)."""
    from components.trainer import precision, training
    flops_per_clip = count_flops(training.build_model(training_config(case, precision="float32")), case.clip_shape)
    result = {"clip": case.name, "infer_batch": case.infer_batch, "train_batch": case.train_batch,
              "gflops_per_clip": flops_per_clip / 1e9, "checks": {}}
    for lever in levers_to_measure(case):
        runs = 1 if lever == "xla" else child_runs   # XLA is far behind whatever state a run lands in
        part = best_of([_lever_in_child(case, lever, repeats, matmul_n) for _ in range(runs)])
        if lever == "fast":   # the headline rows: the defaults, their precision, matmul and reference
            result.update(precision=part["precision"], matmul_gflops_s=part["matmul_gflops_s"],
                          infer_reference_clips_s=part["infer_reference_clips_s"],
                          train_reference_clips_s=part["train_reference_clips_s"])
        # Each lever's MFU divides by the matmuls timed in its own child, so their rates are kept per lever.
        result[f"{lever}_matmul_gflops_s"] = part["matmul_gflops_s"]
        if "matmul_bf16_gflops_s" in part:
            result[f"{lever}_matmul_bf16_gflops_s"] = part["matmul_bf16_gflops_s"]
        result["checks"].update({f"{lever}_{k}": v for k, v in part["checks"].items()})
        for mode, factor in (("infer", 1), ("train", TRAIN_FLOPS_FACTOR)):
            clips_s, reference_s = part[f"{mode}_{lever}_clips_s"], part[f"{mode}_reference_clips_s"]
            model_flops_s = clips_s * flops_per_clip * factor
            result[f"{mode}_{lever}_clips_s"] = clips_s
            result[f"{mode}_{lever}_reference_clips_s"] = reference_s
            # Median of per-round paired ratios (each round times reference and lever side by side in one process),
            # not the ratio of two independently best rates.
            ratios = part[f"{mode}_{lever}_speedup_rounds"]
            result[f"{mode}_{lever}_speedup"] = statistics.median(ratios)
            result[f"{mode}_{lever}_speedup_range"] = [min(ratios), max(ratios)]
            result[f"{mode}_{lever}_mfu"] = model_flops_s / (part["matmul_gflops_s"] * 1e9)
            if lever == "fast":   # the reference's own MFU: 1/MFU bounds any float32 model doing the same FLOPs
                result[f"{mode}_reference_mfu"] = reference_s * flops_per_clip * factor / (part["matmul_gflops_s"] * 1e9)
            if "matmul_bf16_gflops_s" in part:
                result[f"{mode}_{lever}_mfu_bf16"] = model_flops_s / (part["matmul_bf16_gflops_s"] * 1e9)
    logger.info("model %s: %s", case.name, {k: round(v, 3) for k, v in result.items() if isinstance(v, float)})
    return result


def run(cases, repeats: int, matmul_n: int, child_runs: int = 1) -> dict:
    return {case.name: bench_case(case, repeats, matmul_n, child_runs) for case in cases}


def _case_fields(case: ModelCase) -> dict:
    """A case as JSON for a child process (``_case_from_fields`` reads it back)."""
    return {"clip_shape": case.clip_shape, "infer_batch": case.infer_batch, "train_batch": case.train_batch,
            "variants": case.variants}


def _case_from_fields(fields: dict) -> ModelCase:
    return ModelCase(tuple(fields["clip_shape"]), fields["infer_batch"], fields["train_batch"],
                     tuple(fields["variants"]))


def run_capped(cases, repeats: int, matmul_n: int, child_runs: int, isa: str = "AVX2") -> dict:
    """``run`` with oneDNN capped at ``isa`` (ONEDNN_MAX_CPU_ISA) in this run and every child it starts, as on a
    CPU without AVX-512: "auto" then resolves to float32 and bfloat16 levers are skipped (``levers_to_measure``).
    The whole run is one child process because the cap must hold before TensorFlow loads, the FLOP count and the
    choice of levers included."""
    args = ["--run", json.dumps([_case_fields(c) for c in cases]), str(repeats), str(matmul_n), str(child_runs)]
    return json_child("bench.model_speed", args, f"model rows under ONEDNN_MAX_CPU_ISA={isa}",
                      env_changes={"ONEDNN_MAX_CPU_ISA": isa})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--child", nargs=4, metavar=("CASE_JSON", "LEVER", "REPEATS", "MATMUL_N"))
    group.add_argument("--run", nargs=4, metavar=("CASES_JSON", "REPEATS", "MATMUL_N", "CHILD_RUNS"))
    args = parser.parse_args()
    if args.run:
        run_cases = [_case_from_fields(f) for f in json.loads(args.run[0])]
        print(json.dumps(run(run_cases, int(args.run[1]), int(args.run[2]), int(args.run[3]))))
    else:
        child_case = _case_from_fields(json.loads(args.child[0]))
        print(json.dumps(bench_lever(child_case, args.child[1], int(args.child[2]), int(args.child[3]))))
