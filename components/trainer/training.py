"""What one training worker does, as plain functions: strategy, datasets, model, fit, checksums.

The only thing a worker knows about the cluster is ``TF_CONFIG`` (set by whichever launcher started it;
see ``cluster``), so the same code runs under the local process launcher and under a Kubeflow TFJob.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import time
from typing import Callable, Sequence

import numpy as np

from bresnet._keras import keras  # first: fixes the Keras mode before TensorFlow loads
import tensorflow as tf
import tensorflow_transform as tft

from components import transform_module
from components.trainer import augment, history, warm_start
from components.trainer.cluster import cluster_info
from components.trainer.config import DEFAULT_MODEL_BUILDER, TrainingConfig, TrainingJob
from components.trainer.precision import compute_precision
from components.trainer.stall_watchdog import StallWatchdog
from components.video_format import clip_feature_spec

logger = logging.getLogger(__name__)


# ---- strategy ---------------------------------------------------------------------------------------

# Keras mixed-precision policies of the 16-bit precisions (components/trainer/config.py PRECISIONS).
KERAS_POLICIES = {"bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16"}


def collective_implementation(num_gpus: int) -> tf.distribute.experimental.CommunicationImplementation:
    """NCCL for replicas with GPUs (all-reduce between GPU memories, over NVLink or the network), else gRPC rings."""
    implementation = tf.distribute.experimental.CommunicationImplementation
    return implementation.NCCL if num_gpus > 0 else implementation.RING


def make_strategy(config: TrainingConfig) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy for 2+ workers; one worker trains under TF's default strategy.

    One worker has nothing to all-reduce, and MWMS would still feed it through a MultiDeviceIterator, whose
    per-device datasets carry TF's default options: tf.data autotuning on, so a model thread per iterator. At the
    end of `fit` that iterator is destroyed and waits for the model thread, which can sleep up to 60 s: TF 2.16's
    Model::OptimizeLoop is woken for cancellation by a callback that runs before the CancellationManager marks itself
    cancelled (tsl/framework/cancellation.cc), so a thread that wakes in between goes back to sleep. Seen with gdb
    during 16-34 s stalls after the last epoch (main thread in ~RootDataset::Iterator, a thread in OptimizeLoop's
    wait). The default strategy iterates ``make_dataset``'s dataset itself, which has no autotuning thread.
    """
    if config.workers == 1:
        return tf.distribute.get_strategy()
    # No per-collective timeout: TF arms it with a sleeping thread per all-reduce (stall_watchdog.py). A peer that
    # dies is caught by the coordination service's heartbeats, one that hangs alive by train()'s StallWatchdog.
    implementation = collective_implementation(len(tf.config.list_physical_devices("GPU")))
    options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
    logger.info("MultiWorkerMirroredStrategy all-reduce: %s", implementation.name)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


# ---- data -------------------------------------------------------------------------------------------

def split_files(split_uri: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*.gz")))
    if not files:
        raise FileNotFoundError(f"no gzipped TFRecord files (*.gz) in split directory {split_uri!r}")
    return files


# An empty gzip stream is ~20 bytes; a shard at most this big may hold no record at all, and a worker whose
# files hold none would loop forever in ``repeat()``: such splits are sharded by element instead.
MIN_SHARD_BYTES = 64


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How a split is divided among workers: by ``"file"`` (worker i reads ``files[i::n]``, what TF's FILE
    auto-shard policy does with a file list) or by ``"element"`` (every worker reads every file and keeps every
    n-th batch: n times the reads, but works with fewer files than workers)."""
    policy: str
    files_per_worker: tuple[tuple[str, ...], ...]
    bytes_per_worker: tuple[int, ...]
    reason: str

    def describe(self, worker: int) -> str:
        return (f"shards by {self.policy} ({self.reason}): worker {worker} reads "
                f"{len(self.files_per_worker[worker])} file(s), {self.bytes_per_worker[worker]:,} bytes per pass")


def plan_shards(files: Sequence[str], workers: int, sizes: Sequence[int] | None = None) -> ShardPlan:
    """By file when the split has at least as many files as workers and none may be empty; else by element."""
    files = list(files)
    if sizes is None:
        sizes = [tf.io.gfile.stat(f).length for f in files]
    size_of = dict(zip(files, sizes))
    if workers == 1:
        return ShardPlan("file", (tuple(files),), (sum(sizes),), "one worker")
    if len(files) >= workers and min(sizes) > MIN_SHARD_BYTES:
        parts = tuple(tuple(files[i::workers]) for i in range(workers))
        return ShardPlan("file", parts, tuple(sum(size_of[f] for f in p) for p in parts),
                         f"{len(files)} files >= {workers} workers")
    reason = (f"{len(files)} file(s) < {workers} workers" if len(files) < workers
              else f"a file of <= {MIN_SHARD_BYTES} bytes may hold no clip")
    return ShardPlan("element", tuple(tuple(files) for _ in range(workers)), tuple(sum(sizes) for _ in range(workers)),
                     reason)


def make_dataset(files: Sequence[str], tft_output: tft.TFTransformOutput, config: TrainingConfig, *,
                 training: bool, plan: ShardPlan | None = None) -> tf.data.Dataset:
    """Raw clip examples -> (frames float32 [B,T,H,W,3], label int64 [B]) at the global batch size; with mixup or
    CutMix on (``augment.mixes``), one-hot float32 targets [B, K] instead of labels, in training and validation.

    Sharded as ``plan`` says (``plan_shards``): by file (AutoShardPolicy.FILE: each worker reads only its own
    files, so N workers read the split once between them) or by element (AutoShardPolicy.DATA: every worker
    reads the same deterministic order, same shuffle seed, and keeps its own slice). The Transform graph runs
    here, per batch, exactly as the serving signatures run it.
    """
    plan = plan or plan_shards(files, config.workers)
    mixing = augment.mixes(config)
    tft_layer = tft_output.transform_features_layer()
    raw_spec = clip_feature_spec(with_label=True)

    def transform(serialized):
        transformed = tft_layer(tf.io.parse_example(serialized, raw_spec))
        label = transform_module.label_indices(transformed[transform_module.LABEL_NAME], config.labels)
        # A label outside the label map (-1) would silently corrupt the loss: fail loudly instead.
        tf.debugging.assert_non_negative(label, message="clip label is not in the training label map")
        if mixing:
            label = tf.one_hot(label, len(config.labels))
        return transformed[transform_module.FRAMES], label

    def augment_batch(frames, label):
        frames = augment.augment(frames, config)
        return augment.mix(frames, label, config) if mixing else (frames, label)

    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP", num_parallel_reads=min(4, len(files)))
    if training:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
    ds = ds.repeat()  # fit runs a fixed number of steps per epoch, whatever the split size
    ds = ds.batch(config.global_batch_size, drop_remainder=True)
    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment.enabled(config):   # training clips only: evaluation and serving never augment
        logger.info("augmenting the training clips: %s", ", ".join(
            f"{name}={getattr(config, name)}" for name in augment.enabled(config)))
        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # No tf.data autotuning thread: its lost wake-up at cancellation can hold the iterator's destructor, and so the
    # end of `fit`, up to 60 s (make_strategy). Under MWMS the per-device datasets of its MultiDeviceIterator still
    # autotune (TF's default options; the stall remains there, 0-60 s once per fit). Without autotune, map
    # parallelism falls back to TF's default and prefetch keeps its own buffer autotuner; input still runs far
    # ahead of training (bench/input_speed.py).
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if plan.policy == "file" else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


# ---- model ------------------------------------------------------------------------------------------

def load_model_builder(path: str = DEFAULT_MODEL_BUILDER) -> Callable:
    """'module:function' -> the callable; it must accept (num_classes, clip_shape, dropout=)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model builder must look like 'package.module:function', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)


def build_model(config: TrainingConfig, builder: str = DEFAULT_MODEL_BUILDER, *,
                precision: str | None = None) -> keras.Model:
    """The model; in bfloat16 or mixed_float16 precision its layers compute in 16 bits (weights stay float32, so
    the weights of a model built in one precision load into the same model built in another). Under
    mixed_float16 Keras' ``compile`` wraps the optimizer in a LossScaleOptimizer (the model's dtype policy)."""
    build = load_model_builder(builder)
    precision = precision or compute_precision(config)
    if precision == "float32":
        return build(len(config.labels), config.clip_shape, dropout=config.dropout)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(KERAS_POLICIES[precision])
    try:
        return build(len(config.labels), config.clip_shape, dropout=config.dropout)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_learning_rate(config: TrainingConfig):
    if not config.warmup_cosine:
        return config.scaled_learning_rate
    warmup_steps = int(round(config.warmup_epochs * config.steps_per_epoch))
    decay_steps = max(1, config.total_steps - warmup_steps)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(config.scaled_learning_rate, decay_steps)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps, warmup_target=config.scaled_learning_rate,
                                                  warmup_steps=warmup_steps)


class BackboneScaledUpdates:
    """Mixin for a Keras optimizer (``keras.optimizers.AdamW``, ``SGD``): the backbone's updates are ``factor`` times
    what the optimizer would apply, the head's unchanged. ``factor`` is 0 for the first ``freeze_steps`` steps (only
    the head trains), then ``multiplier`` (``TrainingConfig.backbone_learning_rate_multiplier``).

    Why a per-variable learning rate, and not gradients scaled or layers frozen:
    - AdamW divides each gradient by its running magnitude, so a scaled gradient changes nothing, and a zeroed one
      still moves its variable (by the momentum, and by the weight decay, which ignores gradients). AdamW's and SGD's
      steps and their decoupled weight decay are all linear in the learning rate, so the rate the backbone's update
      reads is scaled instead (the ``learning_rate`` property, while ``update_step`` runs for a backbone variable; the
      backbone's weight decay is applied there too, at the scaled rate). A factor 0 leaves a variable bit-identical;
      AdamW's moment estimates still follow its gradients.
    - ``factor`` derives from the step counter inside the compiled train step. ``trainable = False`` for the frozen
      epochs would change the trainable variables mid-``fit``: a second train function traced on every MWMS worker
      mid-run, with other collectives, and a phase that a run resumed by BackupAndRestore would have to reconstruct.
      The step counter is in the checkpoint BackupAndRestore restores, so a resumed run is in the right phase by
      construction, one train function serves the whole run, and every variable has its optimizer slots from the
      start (``train`` builds them before the first step, where MWMS's broadcast of new variables has no timeout).
      The cost: the backbone's backward pass runs during the frozen epochs too, and its batch-norm statistics keep
      following the new data (they would once it trains anyway).
    """

    _lr_factor = None      # set only while update_step traces a backbone variable's update

    def scale_backbone(self, variables, multiplier: float, freeze_steps: int) -> None:
        """Marks ``variables`` (the model's, before the optimizer is built) as the backbone."""
        # The optimizer's own variable key: the distributed container's under a strategy, which is also how it finds
        # a variable's slots inside the per-replica update.
        self._backbone_keys = frozenset(self._var_key(v) for v in variables)
        self._backbone_multiplier = float(multiplier)
        self._freeze_steps = int(freeze_steps)

    def backbone_factor(self) -> tf.Tensor:
        """This step's factor of the backbone's updates: 0 while frozen, then the multiplier."""
        multiplier = tf.constant(self._backbone_multiplier, tf.float32)
        if not self._freeze_steps:
            return multiplier
        return tf.where(self.iterations < self._freeze_steps, tf.zeros_like(multiplier), multiplier)

    def _is_backbone(self, variable) -> bool:
        return self._var_key(variable) in self._backbone_keys

    @property
    def learning_rate(self):
        lr = super().learning_rate
        return lr if self._lr_factor is None else lr * tf.cast(self._lr_factor, lr.dtype)

    @learning_rate.setter
    def learning_rate(self, value):
        super(BackboneScaledUpdates, type(self)).learning_rate.fset(self, value)

    def _use_weight_decay(self, variable):
        # The backbone's weight decay is applied in update_step, at its scaled rate.
        return not self._is_backbone(variable) and super()._use_weight_decay(variable)

    def update_step(self, gradient, variable):
        if not self._is_backbone(variable):
            return super().update_step(gradient, variable)
        self._lr_factor = self.backbone_factor()
        try:
            if self.weight_decay is not None and super()._use_weight_decay(variable):
                lr = tf.cast(self.learning_rate, variable.dtype)
                variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * lr)
            return super().update_step(gradient, variable)
        finally:
            self._lr_factor = None


class BackboneScaledAdamW(BackboneScaledUpdates, keras.optimizers.AdamW):
    """AdamW whose backbone updates are scaled (``BackboneScaledUpdates``)."""


class BackboneScaledSGD(BackboneScaledUpdates, keras.optimizers.SGD):
    """SGD with momentum whose backbone updates are scaled (``BackboneScaledUpdates``)."""


def make_optimizer(config: TrainingConfig, backbone: Sequence | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer and schedule. With ``backbone`` (the model's backbone variables, when fine-tuning a
    loaded one), one that freezes them for ``freeze_backbone_epochs`` and then scales their learning rate by
    ``backbone_learning_rate_multiplier``."""
    lr = make_learning_rate(config)
    adamw = config.optimizer == "adamw"
    kwargs = {"weight_decay": config.weight_decay, **({} if adamw else {"momentum": 0.9})}
    if backbone is None:
        return (keras.optimizers.AdamW if adamw else keras.optimizers.SGD)(learning_rate=lr, **kwargs)
    optimizer = (BackboneScaledAdamW if adamw else BackboneScaledSGD)(learning_rate=lr, **kwargs)
    optimizer.scale_backbone(backbone, config.backbone_learning_rate_multiplier,
                             config.freeze_backbone_epochs * config.steps_per_epoch)
    return optimizer


def make_loss(config: TrainingConfig):
    """Cross-entropy of the logits against the label index; with ``label_smoothing`` e, against 1 - e on the label
    and e spread over all classes. With mixup or CutMix the labels are (soft) one-hot targets: categorical
    cross-entropy, smoothed the same way."""
    if augment.mixes(config):
        return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    if config.label_smoothing == 0:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    smoothing = config.label_smoothing

    def smoothed_sparse_crossentropy(labels, logits):
        targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
        return keras.losses.categorical_crossentropy(targets, logits, from_logits=True, label_smoothing=smoothing)

    return smoothed_sparse_crossentropy


def compile_model(model: keras.Model, config: TrainingConfig, *, fine_tune: bool = False) -> None:
    """``fine_tune``: the model's backbone was loaded (``init_from``), so ``freeze_backbone_epochs`` and
    ``backbone_learning_rate_multiplier`` apply to it."""
    backbone = warm_start.backbone_variables(model) if fine_tune and config.fine_tunes_backbone else None
    model.compile(
        optimizer=make_optimizer(config, backbone),
        loss=make_loss(config),
        # "accuracy" either way (the history's, the logs' and BackupAndRestore's key): with one-hot targets, the
        # class of the larger share of a mixed clip counts as its label.
        metrics=[(keras.metrics.CategoricalAccuracy if augment.mixes(config)
                  else keras.metrics.SparseCategoricalAccuracy)(name="accuracy")],
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )


def weights_digest(weights: Sequence[np.ndarray]) -> dict:
    """sha256 over all weights (trainable and not) in order: equal digests mean bit-identical models."""
    h = hashlib.sha256()
    count = 0
    for w in weights:
        arr = np.ascontiguousarray(w)
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
        count += arr.size
    return {"sha256": h.hexdigest(), "num_values": int(count)}


def write_json(path: str, payload: dict) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(payload, f, indent=1)


# ---- callbacks --------------------------------------------------------------------------------------

class ProgressLogger(keras.callbacks.Callback):
    """Logs per-epoch loss/accuracy and this worker's clips/s, and keeps the worker's progress file.

    Must come after BackupAndRestore in the callback list, so an epoch is only recorded once its
    checkpoint exists. Throughput counts training steps only (epoch start to validation start).
    """

    def __init__(self, config: TrainingConfig, worker_index: int, scratch_dir: str, attempt: int):
        super().__init__()
        self._config = config
        self._worker = worker_index
        self._scratch = scratch_dir
        self._attempt = attempt
        self._progress = history.load_progress(scratch_dir, worker_index)
        self._epoch_start = 0.0
        self._train_end: float | None = None
        self._started = False

    def _record_start(self, initial_epoch: int) -> None:
        self._started = True
        self._progress["starts"].append({"attempt": self._attempt, "initial_epoch": initial_epoch})
        history.save_progress(self._scratch, self._progress)
        logger.info("worker %d attempt %d: training from epoch %d of %d", self._worker, self._attempt,
                    initial_epoch, self._config.epochs)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:  # BackupAndRestore has restored by now: ``epoch`` is where we resume
            self._record_start(int(epoch))
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_train_end(self, logs=None):
        if not self._started:  # restored a backup of a finished training: no epoch left to run
            self._record_start(self._config.epochs)

    def on_test_begin(self, logs=None):
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        train_seconds = (self._train_end or time.perf_counter()) - self._epoch_start
        clips = self._config.steps_per_epoch * self._config.batch_size_per_worker
        record = {"epoch": int(epoch) + 1, "attempt": self._attempt, "train_seconds": round(train_seconds, 4),
                  "clips_per_s": round(clips / max(train_seconds, 1e-9), 3), "threads": thread_count()}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self._progress["epochs"].append(record)
        history.save_progress(self._scratch, self._progress)
        metrics = " ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()))
        logger.info("worker %d epoch %d/%d: %s | %.1f clips/s on this worker (%d clips in %.2fs), %s threads",
                    self._worker, epoch + 1, self._config.epochs, metrics, record["clips_per_s"], clips,
                    train_seconds, record["threads"] if record["threads"] is not None else "?")


def thread_count() -> int | None:
    """This process's threads (Linux), logged each epoch: flat under MWMS since the stall watchdog replaced TF's
    per-collective timeout, which parked a thread per all-reduce (stall_watchdog.py)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    except (OSError, StopIteration, ValueError):
        return None


# ---- the whole worker -------------------------------------------------------------------------------

def weights_path(scratch_dir: str, worker_index: int) -> str:
    return os.path.join(scratch_dir, "weights", f"worker-{worker_index}.json")


def train(job: TrainingJob, *, attempt: int = 0, extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Trains on the cluster described by TF_CONFIG; the chief exports the serving model.

    Returns this worker's final weights digest (also written to ``<scratch>/weights/worker-<i>.json``): ``initial``
    is the digest before training (after the warm start, if any), ``warm_start`` the warm-start report or None.
    """
    from components.trainer.export import export_serving_model  # keeps the worker import graph lazy

    config = job.config
    cluster = cluster_info()
    if cluster.num_workers != config.workers:
        raise ValueError(f"TF_CONFIG describes {cluster.num_workers} workers but config.workers is "
                         f"{config.workers}")
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config)
    me = cluster.worker_index
    logger.info("%s: worker %d of %d (%s), %d replicas in sync, global batch %d, collective timeout %.0fs, "
                "precision %s (configured: %s)",
                "MultiWorkerMirroredStrategy" if config.workers > 1 else "one worker, TF's default strategy", me,
                cluster.num_workers,
                "chief" if cluster.is_chief else "non-chief", strategy.num_replicas_in_sync, config.global_batch_size,
                config.collective_timeout_s, compute_precision(config), config.precision)

    tft_output = tft.TFTransformOutput(job.transform_graph_uri)
    train_files = split_files(job.train_uri)
    train_plan = plan_shards(train_files, cluster.num_workers)
    logger.info("worker %d: train split %s", me, train_plan.describe(me))
    train_ds = make_dataset(train_files, tft_output, config, training=True, plan=train_plan)
    eval_ds = (make_dataset(split_files(job.eval_uri), tft_output, config, training=False)
               if config.eval_steps > 0 else None)

    # Warm start: read outside the strategy's scope (loading a SavedModel creates variables, which MWMS would
    # broadcast); every worker reads the same source, so the replicas start identical.
    init_weights = warm_start.read_source_weights(job.init_weights_from) if job.init_weights_from else None
    if init_weights is None and config.fine_tunes_backbone:
        logger.info("worker %d: no weights to start from (init_from %r found none): training from scratch, so "
                    "freeze_backbone_epochs and backbone_learning_rate_multiplier do not apply", me, config.init_from)
    # One thread fails this worker when training stops moving, e.g. a peer that hangs alive (stall_watchdog.py:
    # the per-collective timeout it replaces parked a thread per all-reduce); one worker has no peers to wait on.
    watchdog = StallWatchdog(config.collective_timeout_s, me) if cluster.num_workers > 1 else None
    with watchdog if watchdog is not None else contextlib.nullcontext():
        with strategy.scope():
            model = build_model(config, job.model_builder)
            compile_model(model, config, fine_tune=init_weights is not None)
            warm_report = None
            if init_weights is not None:
                # Assigned before BackupAndRestore restores anything: a resumed run continues from its
                # checkpoint.
                warm_report = warm_start.assign_initial_weights(model, init_weights, job.init_weights_from,
                                                                config.init_scope)
                logger.info("worker %d: warm start from %s (init_scope %s): %d variables loaded, reinitialized: %s",
                            me, job.init_weights_from, config.init_scope, warm_report["loaded"],
                            warm_report["reinitialized"])
                if config.fine_tunes_backbone:
                    logger.info("worker %d: fine-tuning: the backbone (all but %s) frozen for the first %d "
                                "epoch(s), then at %g x the head's learning rate", me,
                                warm_start.head_layer(model).name, config.freeze_backbone_epochs,
                                config.backbone_learning_rate_multiplier)
                del init_weights
            # MWMS broadcasts every new variable's initial value from the chief. Optimizer slots are normally
            # created lazily inside the first train step; creating them here keeps the training steps to
            # all-reduces (and broadcasts out of the traced step).
            model.optimizer.build(model.trainable_variables)
        # get_weights is collective under MWMS (sync-on-read variables such as batch-norm statistics are
        # all-reduced when read), so every worker reads the weights at the same points, and only here.
        initial = weights_digest(model.get_weights())
        if warm_report is not None and cluster.is_chief:
            # in the run folder, which the executor shares with every launcher backend (a TFJob gets its own
            # scratch)
            write_json(warm_start.report_path(job.run_dir), warm_report)

        tensorboard_dir = (job.run_dir if cluster.is_chief
                           else os.path.join(job.scratch_dir, "tensorboard", f"worker-{me}"))
        backup_dir = os.path.join(job.scratch_dir, "backup")
        callbacks = [
            # Kept past the end of fit (removed once the model is exported): a cluster that fails while
            # exporting resumes with nothing left to train instead of training from scratch.
            keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
            ProgressLogger(config, me, job.scratch_dir, attempt),
            keras.callbacks.TensorBoard(tensorboard_dir, update_freq="epoch", profile_batch=0),
            *extra_callbacks,
            *([watchdog] if watchdog is not None else []),
        ]
        started = time.perf_counter()
        model.fit(train_ds, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                  validation_data=eval_ds, validation_steps=config.eval_steps or None,
                  callbacks=callbacks, verbose=0)
    logger.info("worker %d: training done in %.1fs", me, time.perf_counter() - started)

    # The chief's end-of-fit work (checkpoint, TensorBoard) can lag a loaded peer by more than the collective
    # timeout; a file barrier first means the collective read below starts with every worker present.
    wait_for_peers(os.path.join(job.scratch_dir, "fit_done", f"attempt-{attempt}"), me, cluster.num_workers)
    weights = model.get_weights()
    digest = {"worker": me, "initial": initial, **weights_digest(weights), "warm_start": warm_report}
    write_json(weights_path(job.scratch_dir, me), digest)
    done_marker = os.path.join(job.scratch_dir, "done", f"attempt-{attempt}")
    if cluster.is_chief:
        export_serving_model(weights, config, job.transform_graph_uri, job.serving_model_dir, job.model_builder)
        write_json(done_marker, {"serving_model_dir": job.serving_model_dir})
        if tf.io.gfile.exists(backup_dir):
            tf.io.gfile.rmtree(backup_dir)
    else:
        wait_for_chief(done_marker)
    return digest


def wait_for_peers(barrier_dir: str, me: int, workers: int, timeout_s: float = 3600.0, poll_s: float = 0.5) -> None:
    """Marks this worker as arrived in ``barrier_dir`` and waits until all ``workers`` have (a dead peer is the
    launcher's to detect: it stops the cluster)."""
    write_json(os.path.join(barrier_dir, f"worker-{me}"), {"worker": me})
    _poll_files(lambda: len(tf.io.gfile.glob(os.path.join(barrier_dir, "worker-*"))) >= workers, timeout_s, poll_s,
                f"worker {me}: not every worker finished training within {timeout_s:.0f}s ({barrier_dir})")


def wait_for_chief(marker: str, timeout_s: float = 3600.0, poll_s: float = 0.5) -> None:
    """Non-chiefs stay up until the chief has exported.

    A worker that exits while a peer still runs is reported by the coordination service as a missed
    heartbeat, which aborts the peer's collectives and fills its log with errors; waiting avoids both.
    """
    logger.info("waiting for the chief to export the model")
    _poll_files(lambda: tf.io.gfile.exists(marker), timeout_s, poll_s,
                f"the chief did not finish exporting within {timeout_s:.0f}s (no {marker})")


def _poll_files(done: Callable[[], bool], timeout_s: float, poll_s: float, timeout_message: str) -> None:
    """Waits until ``done()`` (a check of shared files: works on object stores, needs no collective)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(timeout_message)
        time.sleep(poll_s)
