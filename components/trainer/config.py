"""Typed, validated training configuration and the job description a launcher starts workers with.

``TrainingConfig`` is what a pipeline author sets (it travels as JSON in the component's execution
parameter); ``TrainingJob`` adds where things are (data, Transform graph, outputs, scratch) and is what a
launcher hands to every worker process, again as JSON. Both are frozen: a worker can't drift from what
the executor decided.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Sequence

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "float32", "bfloat16", "mixed_float16")
EXPORT_PRECISIONS = ("float32", "bfloat16", "mixed_float16", "training")
DEFAULT_MODEL_BUILDER = "bresnet:build_classifier"
INIT_FROM_HELP = ("'none' (from scratch), 'serving' (the model currently served) or a path (a SavedModel directory, "
                  "a TFX Model artifact directory, a serving model base or a Keras .h5 weights file)")
INIT_SCOPES = ("all", "backbone")


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _require_float(name: str, value: Any, minimum: float, *, inclusive: bool = True,
                   maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        raise ValueError(f"{name} must be {'>=' if inclusive else '>'} {minimum}, got {value!r}")
    if maximum is not None and value >= maximum:
        raise ValueError(f"{name} must be < {maximum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters and cluster size of one training run.

    ``labels`` are the class names in label-map order (index i is class i); ``clip_shape`` is
    [T, H, W, 3]. The global batch is ``batch_size_per_worker * workers``: adding workers adds data
    per step, it does not split a fixed batch.
    """
    labels: tuple[str, ...]
    clip_shape: tuple[int, int, int, int]
    epochs: int = 10
    steps_per_epoch: int = 100
    eval_steps: int = 10
    batch_size_per_worker: int = 8
    learning_rate: float = 1e-3
    # 0: `learning_rate` is the rate, whatever the workers. N > 0: `learning_rate` is the rate for N workers' global
    # batch, and the run uses learning_rate x workers / N (the linear scaling rule, Goyal et al. 2017, "Accurate,
    # Large Minibatch SGD"), so a preset keeps its recipe when `--workers` changes the global batch.
    learning_rate_reference_workers: int = 0
    warmup_cosine: bool = True          # linear warm-up then cosine decay to 0 over all steps; else constant
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"            # "adamw" or "sgd" (momentum 0.9, decoupled weight decay)
    weight_decay: float = 1e-4
    dropout: float = 0.0
    # Clips (serialized records) the training input shuffles among. ClipGen writes a video's clips next to each
    # other, so a small buffer puts clips of the same few videos into one batch. Memory: this many records of
    # T*H*W*3 bytes each (256 of 16x112x112: ~150 MB; the demo's 4,096 of 8x32x32: ~100 MB).
    shuffle_buffer: int = 256
    workers: int = 1
    seed: int = 0
    # Multi-worker: how long a worker may go without finishing a step before it gives up on its peers (a peer that
    # hangs alive); it must exceed the workers' skew in reaching the first step. See trainer/stall_watchdog.py.
    collective_timeout_s: float = 300.0
    max_restarts: int = 0
    # Speed levers, measured by `make bench` (bench/README.md); the defaults are what won on CPU.
    jit_compile: bool = False           # XLA for the train step: about 2x slower than oneDNN's kernels on CPU
    # Train steps per tf.function call (Keras' steps_per_execution): the per-call Python work and the reads of the
    # metrics' synchronized variables (each a collective under MWMS) happen once per call instead of every step.
    steps_per_execution: int = 1
    # "bfloat16": layers compute in bfloat16 (weights, logits and loss stay float32): 1.5-1.9x faster training
    # and ~2x faster inference at 16x112x112 on a CPU with AVX512-BF16, demo accuracy within the seed-to-seed
    # spread (bench/README.md). "mixed_float16": layers compute in float16 with loss scaling, for GPUs with tensor
    # cores. "auto" (the default), for the replicas' devices (components/trainer/precision.py): mixed_float16 on
    # GPUs with tensor cores, float32 on older GPUs; on CPUs bfloat16 with AVX512-BF16 or AMX, float32 elsewhere.
    # The Trainer executor resolves "auto" once and hands every worker the result, so the replicas of one run never
    # compute in different precisions.
    precision: str = "auto"
    # What the serving SavedModel computes in. Serving is its own decision: a bfloat16 model infers at ~0.77x the
    # float32 rate on a CPU without AVX512-BF16 (bench/README.md), so the export is float32 whatever trained it,
    # unless this says "bfloat16", "mixed_float16" (serves on GPUs only: TF's CPU kernels lack float16 MaxPool3D) or
    # "training" (the resolved training precision).
    export_precision: str = "float32"
    # Warm start: where the initial weights come from. "none": from scratch. "serving": the model currently served
    # (the highest complete version under <serving_dir>/<model_name>, as the Evaluator's baseline; from scratch while
    # none is). Anything else is a path: a SavedModel directory of this model (a pushed version), a TFX Model artifact
    # directory (its Format-Serving/), a serving model base (its newest complete version) or a Keras .h5 weights file.
    # Variables are matched by name (Keras' _1, _2 instance suffixes ignored) and shape; those of another shape (the
    # head, when the labels changed) and those the source lacks keep their fresh initialization and are recorded on
    # the Model artifact (``reinitialized``).
    # A resumed run (BackupAndRestore) continues from its checkpoint, not from this source.
    init_from: str = "none"
    # Fine-tuning (components/trainer/warm_start.py; measured in bench/README.md "Fine-tuning"). The "head" is the
    # layer that computes the logits (BResNet's `logits`; for another builder its model's `head` attribute or its
    # functional output layer); the "backbone" is every other layer. The three fields below need an init_from: they
    # say how a pretrained backbone is reused, and with init_from "none" they would freeze or slow down a random one,
    # which is never what was meant, so that is an error. Where init_from "serving" finds nothing served yet (a
    # scheduled pipeline's first run), the run trains from scratch and they are ignored, with a log line saying so.
    #
    # Which of the source's variables load: "all" (every variable the model shares with the source by name and shape),
    # or "backbone" (the head always keeps its fresh initialization, even when the class count is unchanged: a source
    # trained on other classes whose count happens to match).
    init_scope: str = "all"
    # Epochs at the start of the run during which only the head trains: the backbone's weights receive no update
    # (AdamW's moment estimates of them still follow the gradients), so a fresh head first learns on the pretrained
    # features instead of sending its random-init gradients through them. The backbone's batch-norm statistics keep
    # following the new data. Equal to `epochs`: only the head ever trains (a linear probe of the backbone).
    freeze_backbone_epochs: int = 0
    # The backbone's learning rate as a fraction of the head's (after the frozen epochs): every backbone update,
    # weight decay included, is this times what the schedule gives the head. In (0, 1]; 1: one learning rate.
    backbone_learning_rate_multiplier: float = 1.0
    # Augmentation of the training clips (components/trainer/augment.py: tf.data, after the Transform; evaluation and
    # serving never augment). Every one is off at its default. A random crop of at least `augment_crop_area_min` of
    # the clip's area (aspect 3/4..4/3; one box for all frames), resized back to H x W; a left-right flip with
    # probability 0.5 (off: a flip turns the demo's move_left into move_right); per clip, a brightness shift of up
    # to `augment_brightness` standard deviations (the clips are normalized) and a contrast scale of 1 +- `augment_
    # contrast`; temporal stride jitter: a random stretch of `augment_speed_min`..1 of the clip's T frames played
    # over T frames (ClipGen stores exactly T frames, so the jitter can slow a clip down, never speed it up).
    augment_crop_area_min: float = 1.0
    augment_flip: bool = False
    augment_brightness: float = 0.0
    augment_contrast: float = 0.0
    augment_speed_min: float = 1.0
    # Mixup and CutMix (off at 0): per batch, lam ~ Beta(alpha, alpha); mixup blends each clip with the batch's
    # reversed order, lam x + (1 - lam) x'; CutMix pastes a box of ~(1 - lam) of the frame from x' into every frame
    # of x. Targets mix by the same shares, so with either on the labels become one-hot (soft) targets for training
    # and validation alike, and the loss and the accuracy metric their categorical forms. Both on: each batch picks
    # one, evens.
    augment_mixup_alpha: float = 0.0
    augment_cutmix_alpha: float = 0.0
    # Label smoothing of the training loss (the targets: 1 - e on the label, e spread over all classes).
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        # Accept lists (JSON) but store tuples so the config stays hashable and immutable.
        if isinstance(self.labels, (str, bytes)) or not isinstance(self.labels, Sequence):
            raise TypeError(f"labels must be a sequence of class names, got {self.labels!r}")
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) == 1:   # empty: the run's label map, filled in by the Trainer's executor
            raise ValueError(f"labels must name at least 2 classes, got {list(self.labels)!r}")
        bad = [l for l in self.labels if not isinstance(l, str) or not l or "\n" in l]
        if bad:
            raise ValueError(f"labels must be non-empty single-line strings, got {bad!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {list(self.labels)!r}")

        if isinstance(self.clip_shape, (str, bytes)) or not isinstance(self.clip_shape, Sequence):
            raise TypeError(f"clip_shape must be a sequence [T, H, W, 3], got {self.clip_shape!r}")
        object.__setattr__(self, "clip_shape", tuple(self.clip_shape))
        if (len(self.clip_shape) != 4 or self.clip_shape[3] != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.clip_shape)):
            raise ValueError(f"clip_shape must be 4 positive ints [T, H, W, 3], got {list(self.clip_shape)!r}")

        _require_int("epochs", self.epochs, 1)
        _require_int("steps_per_epoch", self.steps_per_epoch, 1)
        _require_int("eval_steps", self.eval_steps, 0)
        _require_int("batch_size_per_worker", self.batch_size_per_worker, 1)
        _require_int("workers", self.workers, 1)
        _require_int("seed", self.seed, 0)
        _require_int("max_restarts", self.max_restarts, 0)
        _require_int("steps_per_execution", self.steps_per_execution, 1)
        _require_int("shuffle_buffer", self.shuffle_buffer, 1)
        _require_float("learning_rate", self.learning_rate, 0.0, inclusive=False)
        _require_int("learning_rate_reference_workers", self.learning_rate_reference_workers, 0)
        _require_float("warmup_epochs", self.warmup_epochs, 0.0)
        _require_float("weight_decay", self.weight_decay, 0.0)
        _require_float("dropout", self.dropout, 0.0, maximum=1.0)
        _require_float("collective_timeout_s", self.collective_timeout_s, 0.0, inclusive=False)
        for name in ("augment_crop_area_min", "augment_speed_min"):   # fractions in (0, 1]; 1 is off
            _require_float(name, getattr(self, name), 0.0, inclusive=False)
            if getattr(self, name) > 1.0:
                raise ValueError(f"{name} must be <= 1 (1: off), got {getattr(self, name)!r}")
        _require_float("augment_brightness", self.augment_brightness, 0.0)
        _require_float("augment_mixup_alpha", self.augment_mixup_alpha, 0.0)
        _require_float("augment_cutmix_alpha", self.augment_cutmix_alpha, 0.0)
        _require_float("augment_contrast", self.augment_contrast, 0.0, maximum=0.99)
        _require_float("label_smoothing", self.label_smoothing, 0.0, maximum=0.99)
        for name in ("warmup_cosine", "jit_compile", "augment_flip"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.warmup_cosine and self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be <= epochs ({self.epochs}), got {self.warmup_epochs!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.export_precision not in EXPORT_PRECISIONS:
            raise ValueError(f"export_precision must be one of {EXPORT_PRECISIONS}, got {self.export_precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not isinstance(self.init_from, str):
            raise TypeError(f"init_from must be a str ({INIT_FROM_HELP}), got {self.init_from!r}")
        if not self.init_from.strip() or self.init_from != self.init_from.strip() or "\n" in self.init_from:
            raise ValueError(f"init_from must be {INIT_FROM_HELP}, got {self.init_from!r}")
        self._check_fine_tuning()

    def _check_fine_tuning(self) -> None:
        if self.init_scope not in INIT_SCOPES:
            raise ValueError(f"init_scope must be one of {INIT_SCOPES} (which variables of init_from load), "
                             f"got {self.init_scope!r}")
        _require_int("freeze_backbone_epochs", self.freeze_backbone_epochs, 0)
        if self.freeze_backbone_epochs > self.epochs:
            raise ValueError(f"freeze_backbone_epochs must be <= epochs ({self.epochs}; equal: only the head trains), "
                             f"got {self.freeze_backbone_epochs}")
        _require_float("backbone_learning_rate_multiplier", self.backbone_learning_rate_multiplier, 0.0,
                       inclusive=False)
        if self.backbone_learning_rate_multiplier > 1.0:
            raise ValueError(f"backbone_learning_rate_multiplier must be <= 1 (the backbone's learning rate as a "
                             f"fraction of the head's), got {self.backbone_learning_rate_multiplier!r}")
        if self.init_from == "none":
            # Meaningful for a pretrained backbone only: on a random one they freeze or slow down noise.
            for name, neutral in (("init_scope", "all"), ("freeze_backbone_epochs", 0),
                                  ("backbone_learning_rate_multiplier", 1.0)):
                if getattr(self, name) != neutral:
                    raise ValueError(f"{name} is {getattr(self, name)!r} but init_from is 'none': {name} applies to a "
                                     f"backbone loaded from init_from (set init_from, or {name} back to {neutral!r})")

    @property
    def fine_tunes_backbone(self) -> bool:
        """The backbone is frozen for some epochs or learns at a lower rate than the head."""
        return self.freeze_backbone_epochs > 0 or self.backbone_learning_rate_multiplier < 1.0

    @property
    def scaled_learning_rate(self) -> float:
        """The peak learning rate of this run: ``learning_rate``, scaled by workers / learning_rate_reference_workers
        when that is set."""
        if not self.learning_rate_reference_workers:
            return self.learning_rate
        return self.learning_rate * self.workers / self.learning_rate_reference_workers

    @property
    def global_batch_size(self) -> int:
        return self.batch_size_per_worker * self.workers

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        d["clip_shape"] = list(self.clip_shape)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingConfig":
        if not isinstance(d, dict):
            raise TypeError(f"training config must be a JSON object, got {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:  # a typo must not silently fall back to a default
            raise ValueError(f"unknown training config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "TrainingConfig":
        if not isinstance(text, str):
            raise TypeError(f"training config JSON must be a str, got {type(text).__name__}")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"training config is not valid JSON ({exc}): {text[:200]!r}") from None
        return cls.from_dict(d)


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """Everything a worker needs besides TF_CONFIG. Paths may be local or any tf.io.gfile URI.

    ``train_uri``/``eval_uri`` are split directories of gzipped clip TFRecords; ``transform_graph_uri`` is
    a TFT output directory; ``serving_model_dir`` receives the exported SavedModel (chief only);
    ``run_dir`` receives TensorBoard logs and the training history; ``scratch_dir`` must be shared by all
    workers (BackupAndRestore checkpoints, per-worker logs, progress and weight checksums).
    ``model_builder`` is the 'module:function' import path of a callable with ``build_classifier``'s
    signature ``(num_classes, clip_shape, dropout=)`` returning a built Keras model.
    ``init_weights_from`` is ``config.init_from`` resolved by the executor (a SavedModel directory or an .h5
    file every worker loads its initial weights from), "" to train from scratch.
    """
    config: TrainingConfig
    train_uri: str
    eval_uri: str
    transform_graph_uri: str
    serving_model_dir: str
    run_dir: str
    scratch_dir: str
    model_builder: str = DEFAULT_MODEL_BUILDER
    init_weights_from: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(self.config).__name__}")
        if not self.config.labels:
            raise ValueError("a TrainingJob needs the labels to train (config.labels is empty)")
        if not isinstance(self.init_weights_from, str):
            raise TypeError(f"init_weights_from must be a path or '' (from scratch), got {self.init_weights_from!r}")
        for field in ("train_uri", "eval_uri", "transform_graph_uri", "serving_model_dir", "run_dir",
                      "scratch_dir", "model_builder"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{field} must be a non-empty path, got {value!r}")

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        return json.dumps(d, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainingJob":
        d = json.loads(text)
        d["config"] = TrainingConfig.from_dict(d["config"])
        return cls(**d)
