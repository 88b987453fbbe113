"""One typed configuration for a pipeline run, loadable from YAML and overridable from the command line.

``RunConfig`` nests small frozen dataclasses; ``load_config(path, overrides)`` reads a YAML file (or a preset
name: ``demo``, ``smoke``) and applies ``section.field=value`` overrides. Unknown keys are errors, never ignored.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from typing import Any

import yaml

from components.clip_sampling import parse_views
from components.frame_formats import DEFAULT_JPEG_QUALITY, FRAME_FORMATS, JPEG, RAW, check_jpeg_quality
from components.metric_names import GATE_METRICS
from components.spans import SpanPattern, span_config_json
from components.trainer.config import TrainingConfig
from components.trainer.kubernetes_pods import DEFAULT_PENDING_TIMEOUT_S, DEFAULT_TIMEOUT_S, RESTART_POLICIES
from components.trainer.vertex_launcher import DEFAULT_MACHINE_TYPE

PIPELINE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """How ClipGen cuts fixed-length clips from videos."""
    num_frames: int = 8
    frame_stride: int = 1
    height: int = 32
    width: int = 32
    clips_per_video_train: int = 8
    # Evaluation views "TxS": T uniformly spaced windows per video, each at S fixed crops (1: centre; 3: left/centre/
    # right, or top/centre/bottom on portrait video). The Evaluator's video metrics average softmax over all T x S
    # clips of a video, as `predict` does. Measured on the demo (bench/README.md "Evaluation views"): 3x3 scored
    # 0.915-0.960 video accuracy on four seeds' models where 3x1 scored 0.895-0.940 (+1.4 points on average).
    eval_views: str = "3x3"
    seed: int = 0
    compression_level: int = 1   # ISA-L gzip level (0-3) of the clip files (bench/README.md)
    # Clip files per split. 0: one per training worker, so each worker reads only its own files (a split with
    # fewer files than workers makes every worker read all of it). Clusters want more (parallel writes).
    num_shards: int = 0
    # How clip frames are stored (components/video_format.py): "raw" (lossless uint8) or "jpeg" (a JPEG per frame
    # at jpeg_quality, ~1/7 of raw's bytes, a cheaper read, a second lossy round). "auto": jpeg when the training
    # replicas have GPUs (RunConfig.replica_gpus > 0), whose input rate is the limit, else raw, since on CPU workers
    # the model takes 93-98% of a worker's time and no format is faster (bench/SCALE.md "Decision").
    frame_format: str = "auto"
    jpeg_quality: int = DEFAULT_JPEG_QUALITY

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, self.height, self.width, 3)

    @property
    def eval_clips_per_video(self) -> int:
        """T of eval_views: temporal windows per eval video."""
        return parse_views(self.eval_views)[0]

    @property
    def eval_crops(self) -> int:
        """S of eval_views: spatial crops per eval window."""
        return parse_views(self.eval_views)[1]

    def __post_init__(self):
        for name in ("num_frames", "frame_stride", "height", "width", "clips_per_video_train"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"clips.{name} must be a positive integer, got {value!r}")
        try:
            parse_views(self.eval_views)
        except ValueError as exc:
            raise ConfigError(f"clips.eval_{exc}") from None
        if isinstance(self.num_shards, bool) or not isinstance(self.num_shards, int) or self.num_shards < 0:
            raise ConfigError(f"clips.num_shards must be an integer >= 0 (0: one per training worker), "
                              f"got {self.num_shards!r}")
        if self.frame_format not in ("auto", *FRAME_FORMATS):
            raise ConfigError(f"clips.frame_format must be one of {('auto', *FRAME_FORMATS)}, got {self.frame_format!r}")
        try:
            check_jpeg_quality(self.jpeg_quality)
        except ValueError as exc:
            raise ConfigError(f"clips.{exc}") from None
        if not isinstance(self.compression_level, int) or not 0 <= self.compression_level <= 3:
            raise ConfigError(f"clips.compression_level must be an ISA-L gzip level in [0, 3], "
                              f"got {self.compression_level!r}")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Which input files a run reads (globs relative to ``data_dir``), and over which spans.

    Patterns may hold TFX's span specs: ``{SPAN}`` (or ``{SPAN:4}``), ``{YYYY}{MM}{DD}`` (a span a day) and
    ``{VERSION}``; then the run reads the window of the ``window_spans`` newest spans up to ``newest_span``
    ("latest": the newest present; "today": the run's UTC date; or a span number / YYYY-MM-DD), and
    ``on_missing_span`` says what a missing newest span does: "fail" (an error naming it) or "skip" (no new
    work). Spans an earlier run clipped are reused, not read again (components/spans.py, README "Scheduled runs").
    """
    train_pattern: str = "train/*"                  # data_layout pre_split
    eval_pattern: str = "eval/*"
    records_pattern: str = "videos-*.tfrecord*"     # data_layout split_by_id: one pattern, split by video id
    window_spans: int = 1
    newest_span: Any = "latest"
    on_missing_span: str = "fail"
    # The label map relative to data_dir: one file, or one per span with the patterns' span specs
    # (span-{SPAN}/label_map.txt); the run's label map is the union over the window (components/label_maps.py).
    label_map: str = "label_map.txt"

    def __post_init__(self):
        import datetime
        if isinstance(self.newest_span, datetime.date):   # YAML reads 2026-12-02 as a date
            object.__setattr__(self, "newest_span", self.newest_span.isoformat())
        for name in ("train_pattern", "eval_pattern", "records_pattern"):
            try:
                SpanPattern(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"ingest.{name}: {exc}") from None

    def patterns(self, data_layout: str) -> dict[str, str]:
        return ({"all": self.records_pattern} if data_layout == "split_by_id"
                else {"train": self.train_pattern, "eval": self.eval_pattern})

    def span_config(self, data_layout: str) -> str:
        """Ingest's ``span_config`` parameter (components/spans.py); a bad setting is a ConfigError."""
        try:
            return span_config_json(self.patterns(data_layout), window_spans=self.window_spans,
                                    newest_span=self.newest_span, on_missing_span=self.on_missing_span,
                                    label_map=self.label_map)
        except ValueError as exc:
            raise ConfigError(f"ingest: {exc}") from None


BEAM_RUNNERS = ("direct", "flink", "dataflow")
# DirectRunner settings for one machine: in a cluster spec they would run every Beam step inside its own pod. Other
# runners ignore them, so they are left out of those runners' arguments.
LOCAL_BEAM_ARGS = ("--direct_running_mode", "--direct_num_workers")
FLINK_ENVIRONMENTS = ("loopback", "external", "docker")
FLINK_LOCAL_MASTER = "[local]"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Beam's Flink job server as scripts/install_standins.sh assembles it from Maven Central (scripts/flink-job-server/).
DEFAULT_FLINK_JOB_SERVER_JAR = os.path.join(_REPO, ".cache", "flink-job-server", "beam-flink-job-server.jar")
# Flink's configuration for the clusters Beam's job server makes (the embedded one, or its remote environments): the
# restart strategy of a failed batch job.
DEFAULT_FLINK_CONF_DIR = os.path.join(_REPO, "deploy", "flink")
DEFAULT_WORKER_POOL = "localhost:50000"   # Beam's Python worker pool as a sidecar of each Flink TaskManager
# Beam's FlinkRunner with one job server per process, stopped with the run (components/beam_workers.py).
FLINK_RUNNER = "components.beam_workers.SharedJobServerFlinkRunner"


@dataclasses.dataclass(frozen=True)
class BeamConfig:
    """Where the Beam steps (Ingest, ClipGen, Transform, Evaluator) run.

    ``direct``: Beam's DirectRunner in the step's own process (pod), with ``beam_args``.

    ``flink``: Apache Flink through Beam's portable runner, ``parallelism`` tasks per stage. By default an embedded
    Flink cluster (``flink_master: "[local]"``) inside Beam's Flink job server, which the runner starts once per
    process from ``flink_job_server_jar`` (scripts/install_standins.sh builds it) with Flink's configuration from
    ``flink_conf_dir`` (deploy/flink: a failed job is re-run twice), and the Python code in SDK worker processes
    of the step's own (``environment: loopback``). On a cluster: ``job_endpoint`` names a running job server (the
    Flink operator's, or Beam's job server image beside a Flink cluster) and ``environment: external`` a Python
    worker pool (``environment_config``, default a TaskManager sidecar at localhost:50000), or ``docker`` the
    image the workers run (``environment_config``, default ``kubeflow.image``).

    ``dataflow``: Google Cloud Dataflow in ``project``/``region``, staging under ``temp_location`` (gs://), its
    workers running the pipeline's image (``kubeflow.image``; the Dockerfile carries Beam's boot entrypoint).

    ``beam_args`` are added after the runner's own arguments (DirectRunner-only ones only for ``direct``)."""
    runner: str = "direct"
    project: str = ""
    region: str = ""
    temp_location: str = ""
    flink_master: str = FLINK_LOCAL_MASTER
    job_endpoint: str = ""
    flink_job_server_jar: str = ""
    flink_conf_dir: str = DEFAULT_FLINK_CONF_DIR
    environment: str = "loopback"
    environment_config: str = ""
    parallelism: int = 2

    def __post_init__(self):
        if self.runner not in BEAM_RUNNERS:
            raise ConfigError(f"beam.runner must be one of {BEAM_RUNNERS}, got {self.runner!r}")
        if self.runner == "dataflow":
            missing = [f"beam.{name}" for name in ("project", "region", "temp_location") if not getattr(self, name)]
            if missing:
                raise ConfigError(f"beam.runner dataflow needs {', '.join(missing)} (--project, --region, "
                                  f"--temp-location)")
            if not self.temp_location.startswith("gs://"):
                raise ConfigError(f"beam.temp_location must be a gs:// path for Dataflow, got {self.temp_location!r}")
        if self.environment not in FLINK_ENVIRONMENTS:
            raise ConfigError(f"beam.environment must be one of {FLINK_ENVIRONMENTS}, got {self.environment!r}")
        if isinstance(self.parallelism, bool) or not isinstance(self.parallelism, int) or self.parallelism < 1:
            raise ConfigError(f"beam.parallelism must be a positive int, got {self.parallelism!r}")
        if self.environment == "loopback" and self.environment_config:
            raise ConfigError(f"beam.environment_config is for the external and docker environments; loopback "
                              f"starts its workers itself (got {self.environment_config!r})")

    def job_server_jar(self) -> str:
        return self.flink_job_server_jar or DEFAULT_FLINK_JOB_SERVER_JAR

    def flink_args(self, image: str) -> list[str]:
        """The Flink runner's arguments (runner flink)."""
        if self.job_endpoint:
            args = ["--runner=PortableRunner", f"--job_endpoint={self.job_endpoint}"]
        else:
            args = [f"--runner={FLINK_RUNNER}", f"--flink_master={self.flink_master}",
                    f"--flink_job_server_jar={self.job_server_jar()}", f"--flink_conf_dir={self.flink_conf_dir}"]
        # As many SDK worker processes per TaskManager as Flink tasks: Beam's default of one runs every task's Python
        # code in one process (bench/README.md, "Beam runners": ClipGen 2,336 clips/s with one, 3,368 with two).
        args += [f"--parallelism={self.parallelism}", f"--sdk_worker_parallelism={self.parallelism}"]
        if self.environment == "loopback":
            # SDK workers as child processes (Beam's worker pool, use_loopback_process_worker), not threads of the
            # step's own process: DoFns are pickled and unpickled as on a cluster's workers.
            args += ["--environment_type=LOOPBACK", "--experiments=use_loopback_process_worker"]
        elif self.environment == "external":
            args += ["--environment_type=EXTERNAL", f"--environment_config={self.environment_config or DEFAULT_WORKER_POOL}"]
        else:
            args += ["--environment_type=DOCKER", f"--environment_config={self.environment_config or image}"]
        return args

    def local_flink_args(self, args: list[str]) -> list[str]:
        """Among the flink arguments ``args``, those that keep the Beam steps on the submitting machine."""
        local = {f"--flink_master={FLINK_LOCAL_MASTER}", "--environment_type=LOOPBACK"}
        return [a for a in args if a in local or a.startswith("--flink_job_server_jar=")]


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """When the Evaluator blesses a model (and so when it is pushed): ``metric`` on the eval split is at least
    ``min_accuracy`` and at most ``max_accuracy_drop`` below the model in serving's."""
    min_accuracy: float = 0.5          # the least value of `metric`
    max_accuracy_drop: float = 0.02    # allowed drop of `metric` vs the model in serving
    top_k: int = 5                     # k of the top-k accuracies (clipped to the class count)
    # accuracy | top_k_accuracy | mean_class_accuracy (clip level), or video_ + one of those (clip probabilities
    # averaged per video). Every one of them is reported either way.
    metric: str = "accuracy"

    def __post_init__(self):
        if self.metric not in GATE_METRICS:
            raise ConfigError(f"gate.metric must be one of {GATE_METRICS}, got {self.metric!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"gate.top_k must be an integer >= 1, got {self.top_k!r}")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(f"gate.min_accuracy must be in [0, 1], got {self.min_accuracy!r}")
        if self.max_accuracy_drop < 0:
            raise ConfigError(f"gate.max_accuracy_drop must be >= 0, got {self.max_accuracy_drop!r}")


# Requests/limits per pipeline step (vCPU, memory). The Trainer step only creates and watches a TFJob; the workers
# get their own (worker_cpu, worker_memory). Ephemeral storage: see README "Run on Kubeflow" (what KFP copies in).
DEFAULT_STEP_RESOURCES = {
    "Ingest": {"cpu": 2, "memory": "4Gi"}, "ClipGen": {"cpu": 4, "memory": "16Gi"},
    "ClipSchema": {"cpu": 1, "memory": "1Gi"}, "Transform": {"cpu": 4, "memory": "16Gi"},
    "Trainer": {"cpu": 1, "memory": "2Gi"}, "Baseline": {"cpu": 1, "memory": "2Gi"},
    "Evaluator": {"cpu": 4, "memory": "16Gi"}, "Pusher": {"cpu": 1, "memory": "2Gi"},
}
_QUANTITY_RE = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?")


def _memory_gib(value: Any, where: str) -> float:
    """'16Gi' / '512Mi' / 4 (GiB) -> GiB, the unit TFX's platform config takes."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Gi|Mi|G|M)", str(value))
    if not match:
        raise ConfigError(f"{where} must be a memory quantity like '16Gi' or '512Mi', got {value!r}")
    number, unit = float(match.group(1)), match.group(2)
    return {"Gi": number, "Mi": number / 1024, "G": number * 1e9 / 2**30, "M": number * 1e6 / 2**30}[unit]


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
    """Where and how the pipeline runs on Kubeflow Pipelines (``compile`` / ``submit`` / ``schedule``)."""
    image: str = ""                 # every step's and every training replica's image (built from the Dockerfile)
    namespace: str = ""             # of the TFJob; empty: the Trainer step pod's own namespace (multi-user KFP)
    service_account: str = ""       # of the training pods (deploy/rbac.yaml; Workload Identity for gs://)
    worker_cpu: str = "4"           # requests of each training replica
    worker_memory: str = "16Gi"
    worker_gpu: int = 0             # nvidia.com/gpu per replica (0: none)
    node_selector: dict = dataclasses.field(default_factory=dict)
    tolerations: tuple = ()         # Kubernetes toleration objects, e.g. {key: dedicated, value: ml, effect: NoSchedule}
    # Replicas: OnFailure (the Training Operator guide's advice; under MWMS a dead worker's peers exit with code 1,
    # which ExitCode would treat as permanent). Restarts are bounded by training.max_restarts (0: Never).
    restart_policy: str = "OnFailure"
    timeout_s: float = DEFAULT_TIMEOUT_S   # the Trainer step's wait for its TFJob; also its activeDeadlineSeconds
    pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S   # a replica Pending longer fails the step, naming why
    # Per-step overrides of DEFAULT_STEP_RESOURCES, e.g. {ClipGen: {cpu: 8, memory: 32Gi}}.
    step_resources: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("worker_cpu", "worker_memory"):
            value = str(getattr(self, name))
            if not _QUANTITY_RE.fullmatch(value):
                raise ConfigError(f"kubeflow.{name} must be a Kubernetes quantity like '4' or '16Gi', got {value!r}")
            object.__setattr__(self, name, value)
        if isinstance(self.worker_gpu, bool) or not isinstance(self.worker_gpu, int) or self.worker_gpu < 0:
            raise ConfigError(f"kubeflow.worker_gpu must be an integer >= 0, got {self.worker_gpu!r}")
        if not isinstance(self.node_selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()):
            raise ConfigError(f"kubeflow.node_selector must map label names to strings, got {self.node_selector!r}")
        if not isinstance(self.tolerations, (list, tuple)) or not all(isinstance(t, dict) for t in self.tolerations):
            raise ConfigError(f"kubeflow.tolerations must be a list of toleration objects, got {self.tolerations!r}")
        object.__setattr__(self, "tolerations", tuple(self.tolerations))
        if self.restart_policy not in RESTART_POLICIES:
            raise ConfigError(f"kubeflow.restart_policy must be one of {RESTART_POLICIES}, got {self.restart_policy!r}")
        for name in ("timeout_s", "pending_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"kubeflow.{name} must be a positive number of seconds, got {value!r}")
        unknown = sorted(set(self.step_resources) - set(DEFAULT_STEP_RESOURCES))
        if unknown:
            raise ConfigError(f"kubeflow.step_resources: unknown step(s) {unknown}; steps: {sorted(DEFAULT_STEP_RESOURCES)}")
        for step, resources in self.step_resources.items():
            if not isinstance(resources, dict) or set(resources) - {"cpu", "memory"}:
                raise ConfigError(f"kubeflow.step_resources.{step} must be {{cpu: N, memory: '4Gi'}}, got {resources!r}")
            if "cpu" in resources and (isinstance(resources["cpu"], bool) or not isinstance(resources["cpu"], (int, float))
                                       or resources["cpu"] <= 0):
                raise ConfigError(f"kubeflow.step_resources.{step}.cpu must be a positive number, got {resources['cpu']!r}")
            if "memory" in resources:
                _memory_gib(resources["memory"], f"kubeflow.step_resources.{step}.memory")

    def resources(self, step: str) -> tuple[float, float]:
        """(vCPU, GiB) of a pipeline step: the default, then this config's override."""
        merged = {**DEFAULT_STEP_RESOURCES.get(step, {"cpu": 1, "memory": "2Gi"}), **self.step_resources.get(step, {})}
        return float(merged["cpu"]), _memory_gib(merged["memory"], f"kubeflow.step_resources.{step}.memory")


# The Trainer's cluster backends (components/trainer/registry.py), for compile/submit/schedule; run-local always
# trains in local processes.
CLUSTER_LAUNCHERS = ("kubeflow", "k8s-job", "vertex")


@dataclasses.dataclass(frozen=True)
class VertexConfig:
    """The Trainer on Vertex AI (``launcher: vertex``, components/trainer/vertex_launcher.py): a CustomJob per attempt,
    worker pool 0 the chief and pool 1 the other workers, each replica a ``machine_type`` with ``accelerator_count``
    GPUs of ``accelerator_type`` (e.g. NVIDIA_TESLA_T4; "" and 0: none), running ``kubeflow.image`` as
    ``service_account`` (an email; "": Vertex's default), for at most ``kubeflow.timeout_s``. The launcher checks
    the values when the pipeline is defined (compile)."""
    project: str = ""
    region: str = ""
    machine_type: str = DEFAULT_MACHINE_TYPE
    accelerator_type: str = ""
    accelerator_count: int = 0
    service_account: str = ""
    api_endpoint: str = ""          # "": <region>-aiplatform.googleapis.com

    def __post_init__(self):
        for name in ("project", "region", "machine_type", "accelerator_type", "service_account", "api_endpoint"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"vertex.{name} must be a string, got {getattr(self, name)!r}")
        if (isinstance(self.accelerator_count, bool) or not isinstance(self.accelerator_count, int)
                or self.accelerator_count < 0):
            raise ConfigError(f"vertex.accelerator_count must be an integer >= 0, got {self.accelerator_count!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    pipeline_name: str = "bresnet-video"
    data_dir: str = "demo_data"                 # video TFRecords: train/*, eval/* and label_map.txt
    pipeline_root: str = "runs/demo/root"
    metadata_path: str = "runs/demo/metadata.sqlite"
    serving_dir: str = "runs/demo/serving"      # TF Serving model base path: <serving_dir>/<model_name>/<version>
    model_name: str = "bresnet"
    # The class names. Empty: the run's label map, read from the data when the run starts (ingest.label_map, the
    # union over the window's spans; components/label_maps.py). Configured, they also allow a window that lacks a
    # class the served model knows.
    labels: tuple[str, ...] = ()
    data_layout: str = "pre_split"              # "pre_split": train/*, eval/*; "split_by_id": one folder, hashed ids
    ingest: IngestConfig = IngestConfig()       # input patterns, spans and the training window
    max_rejected_fraction: float = 0.2          # Ingest and ClipGen fail the run above this (per split)
    beam_args: tuple[str, ...] = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")
    beam: BeamConfig = BeamConfig()             # the runner of the Beam steps (beam_args come after its own)
    clips: ClipConfig = ClipConfig()
    # TrainingConfig fields except labels/clip_shape, which come from `labels` and `clips` above (one source each).
    training: dict = dataclasses.field(default_factory=lambda: dict(DEMO_TRAINING))
    gate: GateConfig = GateConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()
    # Where the Trainer's replicas run when compiled for a cluster: "kubeflow" (a TFJob of the Training Operator),
    # "k8s-job" (an Indexed Job + headless Service, any cluster, no operator; both take the kubeflow section) or
    # "vertex" (a Vertex AI CustomJob: vertex section).
    launcher: str = "kubeflow"
    vertex: VertexConfig = VertexConfig()

    def __post_init__(self):
        derived = {"labels", "clip_shape"} & set(self.training)
        if derived:
            raise ConfigError(f"training.{sorted(derived)[0]} is derived (from labels / clips); set it there instead")
        known = {f.name for f in dataclasses.fields(TrainingConfig)} - {"labels", "clip_shape"}
        unknown = sorted(set(self.training) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in training; known: {sorted(known)}")
        try:  # validate now with placeholder classes, so a typo fails at load time, not minutes into a run
            TrainingConfig(labels=("a", "b"), clip_shape=self.clips.shape, **self.training)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"training: {exc}") from None
        if self.launcher not in CLUSTER_LAUNCHERS:
            raise ConfigError(f"launcher must be one of {CLUSTER_LAUNCHERS}, got {self.launcher!r}")
        if self.launcher == "k8s-job" and self.kubeflow.restart_policy == "ExitCode":
            raise ConfigError("kubeflow.restart_policy ExitCode is a TFJob policy: with launcher k8s-job use OnFailure "
                              "(restart in place) or Never (a new Job per attempt)")
        if not PIPELINE_NAME_RE.fullmatch(self.pipeline_name):
            raise ConfigError(f"pipeline_name must match [a-z0-9][a-z0-9-]{{0,127}} (KFP's rule), got {self.pipeline_name!r}")
        if self.data_layout not in ("pre_split", "split_by_id"):
            raise ConfigError(f"data_layout must be 'pre_split' or 'split_by_id', got {self.data_layout!r}")
        if not 0.0 <= self.max_rejected_fraction <= 1.0:
            raise ConfigError(f"max_rejected_fraction must be in [0, 1], got {self.max_rejected_fraction!r}")
        self.ingest.span_config(self.data_layout)   # validates the window settings now
        if self.beam.runner != "direct":
            if any(a.startswith("--runner") for a in self.beam_args):
                raise ConfigError(f"beam.runner is {self.beam.runner!r} and beam_args names a runner too "
                                  f"({list(self.beam_args)}): give it once")
        if self.beam.runner == "dataflow" and not self.kubeflow.image:
            raise ConfigError("beam.runner dataflow runs the Dataflow workers in the pipeline's image: set "
                              "kubeflow.image (--image)")
        if (self.beam.runner == "flink" and self.beam.environment == "docker" and not self.beam.environment_config
                and not self.kubeflow.image):
            raise ConfigError("beam.environment docker runs the SDK workers in an image: set "
                              "beam.environment_config or kubeflow.image (--image)")

    def beam_pipeline_args(self) -> list[str]:
        """Every Beam step's arguments: the runner's (beam section), then ``beam_args`` (without the DirectRunner's
        own when another runner runs them)."""
        if self.beam.runner == "direct":
            return list(self.beam_args)
        extra = [a for a in self.beam_args if a.split("=", 1)[0] not in LOCAL_BEAM_ARGS]
        if self.beam.runner == "flink":
            return [*self.beam.flink_args(self.kubeflow.image), *extra]
        return ["--runner=DataflowRunner", f"--project={self.beam.project}", f"--region={self.beam.region}",
                f"--temp_location={self.beam.temp_location}", f"--sdk_container_image={self.kubeflow.image}",
                "--sdk_location=container", *extra]

    def local_beam_args(self) -> list[str]:
        """The arguments that tie the Beam steps to the submitting machine: the DirectRunner's (LOCAL_BEAM_ARGS),
        or Flink's embedded cluster, loopback workers and job server jar."""
        args = self.beam_pipeline_args()
        if self.beam.runner == "flink":
            return self.beam.local_flink_args(args)
        return [a for a in args if a.split("=", 1)[0] in LOCAL_BEAM_ARGS]

    @property
    def replica_gpus(self) -> int:
        """GPUs per training replica of the cluster backend: kubeflow.worker_gpu or vertex.accelerator_count."""
        return self.vertex.accelerator_count if self.launcher == "vertex" else self.kubeflow.worker_gpu

    @property
    def clip_frame_format(self) -> str:
        """clips.frame_format with "auto" decided: jpeg for GPU training replicas, raw otherwise."""
        if self.clips.frame_format != "auto":
            return self.clips.frame_format
        return JPEG if self.replica_gpus > 0 else RAW

    def resolve_window(self, today=None):
        """The spans this run would read (components/spans.py); raises MissingSpanError under on_missing_span fail."""
        from components.spans import resolve_from_config
        return resolve_from_config(self.data_dir, self.ingest.span_config(self.data_layout), today=today)

    def training_config(self) -> TrainingConfig:
        """The Trainer's config; with ``labels`` empty the Trainer takes the run's label map from its clips."""
        return TrainingConfig(labels=self.labels, clip_shape=self.clips.shape, **self.training)


# The demo recipe (README "Demo", measured with bench/demo_accuracy.py on the demo clips, oneDNN capped at AVX2, so
# float32): motion is hard to find from scratch, and the seed's initialization sat near chance for ~1,000 steps.
# The classifier's residual blocks now start as their shortcuts (bresnet build_classifier), which reached clip
# accuracy 0.67 after 1,200 steps where the seed's initialization reached 0.22; 2,000 steps of 16 clips reached 0.85
# (video 0.865), 2,400 steps 0.82-0.90 (video 0.835-0.905 over three runs whose clip files a different Beam mode had
# written in a different order). That spread was the input's shuffle: ClipGen writes a video's 8 clips next to each
# other and a 256-clip buffer mixed only ~32 videos into a batch's draw; shuffling among 4,096 clips (most of the
# 4,800-clip split; ~100 MB of 8x32x32 records) took the same 2,400 steps on the same clips from video accuracy 0.835 to 0.93
# (clip 0.817 -> 0.917). One worker: two MWMS processes sharing 2 cores took 238 ms a step for
# 2 x 8 clips where one took 119 ms for 8 and 172 ms for 16 (the all-reduce and the shared cores cost a worker's
# step), so on a 2-core laptop the second worker halves the steps per second for no gain; `--workers 2` (or
# training.workers) runs it with two.
# collective_timeout_s (with `--workers 2`): a worker that finishes no step for 60 s gives up on its peers (a demo
# step takes ~0.2 s); the stall watchdog that enforces it is one thread per worker (trainer/stall_watchdog.py).
DEMO_TRAINING = {"epochs": 6, "steps_per_epoch": 400, "eval_steps": 4, "batch_size_per_worker": 16,
                 "learning_rate": 1e-3, "workers": 1, "warmup_epochs": 0.5, "shuffle_buffer": 4096,
                 "collective_timeout_s": 60.0}

# A realistic cluster run: `compile` / `submit` / `schedule` start from this preset unless --config says otherwise.
# 16x112x112 clips (the model's design size), 4 workers, a collective timeout sized for pods that start and trace
# minutes apart, file-sharded clips, and no laptop Beam settings: pass --runner=DataflowRunner or
# --runner=PortableRunner and its options in beam_args.
CLUSTER = {
    "pipeline_root": "gs://YOUR-BUCKET/bresnet/root",
    "serving_dir": "gs://YOUR-BUCKET/bresnet/serving",
    "data_dir": "gs://YOUR-BUCKET/bresnet/videos",
    "beam_args": [],
    "clips": {"num_frames": 16, "height": 112, "width": 112, "clips_per_video_train": 8, "eval_views": "3x1",
              "num_shards": 64},
    "training": {"epochs": 30, "steps_per_epoch": 500, "eval_steps": 50, "batch_size_per_worker": 8,
                 "learning_rate": 1e-3, "workers": 4, "warmup_epochs": 2.0, "collective_timeout_s": 1800.0,
                 "shuffle_buffer": 1024},
    "gate": {"min_accuracy": 0.5, "max_accuracy_drop": 0.01},
}

# UCF101 (13,320 videos of 101 actions; split 1: 9,537 train, 3,783 test) converted with `python -m pipeline convert`
# into <data_dir>/train and <data_dir>/eval. The cluster preset's roots and runner, at the model's design size:
# 16 frames every 2nd frame (~1 s of 30 fps video), 8 random clips per training video, 10 windows x 3 crops per
# test video (MMAction2's R(2+1)D test recipe; the Evaluator averages softmax over the 30 views of a video and
# gates on video accuracy). An epoch is one pass over the training clips: 9,537 x 8 = 76,296 clips, 2,384 steps of
# the global batch 8 x 4 workers. `training.learning_rate_reference_workers` scales the learning rate linearly with
# the workers (the global batch), so `--workers 8` trains at twice the rate. Augmentation as video papers train
# UCF101: random resized crops, flips (its actions are left-right symmetric, unlike the demo's move_left/right),
# colour jitter, a little temporal stride jitter and label smoothing. Not tuned on UCF101 here (no copy of it on
# these machines); from scratch, R(2+1)D-18-class models reach ~50-60% on UCF101, so pretrain on a larger set and
# fine-tune (training.init_from, init_scope: backbone) for more.
# Cost of an epoch (76,296 clips; bench/README.md's model rows at 16x112x112, batch 8, training): one 2-core
# AVX512-BF16 worker at 11.7 clips/s (bfloat16) 1.8 h, 6.7 clips/s (float32) 3.1 h; a 2-core AVX2 worker at
# 3.1 clips/s (float32) 6.8 h. Per GPU: not measured (no GPU on these machines); bench/SCALE.md's assumed rate
# (H100 at 30% MFU: 17,676 clips/s) is input-bound at 4,062 (raw clips) to 8,667 (clip-size JPEG, which
# frame_format auto picks on GPU workers) clips/s per worker with 26 input cores: ~9-19 s of GPU time an epoch,
# so a GPU run is limited by its input pipeline, not the model. Evaluating 3,783 x 30 = 113,490 views at the
# 2-core bfloat16 inference rate (54.9 clips/s) takes ~35 min.
UCF101 = {
    "pipeline_root": CLUSTER["pipeline_root"],
    "serving_dir": CLUSTER["serving_dir"],
    "data_dir": "gs://YOUR-BUCKET/bresnet/ucf101",
    "beam_args": [],
    "clips": {"num_frames": 16, "frame_stride": 2, "height": 112, "width": 112, "clips_per_video_train": 8,
              "eval_views": "10x3", "num_shards": 64},
    "training": {"epochs": 40, "steps_per_epoch": 2384, "eval_steps": 100, "batch_size_per_worker": 8,
                 "learning_rate": 2e-3, "learning_rate_reference_workers": 4, "workers": 4, "warmup_epochs": 2.0,
                 "collective_timeout_s": 1800.0, "shuffle_buffer": 4096,
                 "augment_crop_area_min": 0.4, "augment_flip": True, "augment_brightness": 0.2,
                 "augment_contrast": 0.2, "augment_speed_min": 0.8, "label_smoothing": 0.1},
    "gate": {"min_accuracy": 0.5, "max_accuracy_drop": 0.01, "metric": "video_accuracy"},
}

PRESETS: dict[str, dict] = {
    "cluster": CLUSTER,
    "ucf101": UCF101,
    # The built-in demo: `make demo`. Sized for a 2-core laptop (see README for measured times). Beam in one process:
    # at demo size every Beam job is mostly start-up, and multi_processing starts 2 workers that each import TF
    # (under the AVX2 cap, 2026-12-02: Ingest 27.1 -> 8.4 s, ClipGen 19.7 -> 8.2, Transform 21.0 -> 10.5,
    # Evaluator 39.5 -> 19.0 s with 1,000 instead of 600 eval clips). RunConfig's default stays multi_processing, which
    # scales with data: pass it back with --set beam_args=... when the demo preset runs your data (run-local).
    "demo": {"beam_args": ["--direct_running_mode=in_memory", "--direct_num_workers=1"]},
    # CI smoke run: tiny clips, a few steps; proves the wiring, not the accuracy.
    "smoke": {
        "clips": {"num_frames": 4, "height": 32, "width": 32, "clips_per_video_train": 1, "eval_views": "1x1"},
        "training": {"epochs": 1, "steps_per_epoch": 2, "eval_steps": 1, "batch_size_per_worker": 2,
                     "warmup_epochs": 0.0},
        "gate": {"min_accuracy": 0.0, "max_accuracy_drop": 1.0},
        "beam_args": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    },
}


# Keys that moved, so that an old config file gets told where its setting went.
RENAMED = {"clips.clips_per_video_eval": "clips.eval_views ('<T>x1' keeps its meaning: T windows, centre crop)"}


def from_dict(cls, data: dict, where: str = ""):
    """Builds dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        renamed = "".join(f"; {where}.{k} is now {RENAMED[f'{where}.{k}']}"
                          for k in unknown if f"{where}.{k}" in RENAMED)
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'config'}; known: {sorted(fields)}{renamed}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, path)
        elif hint is dict and isinstance(value, dict) and path == "training":
            value = {**(fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING
                        else {}), **value}
        elif typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(text: str) -> dict:
    """'training.epochs=3' -> {'training': {'epochs': 3}} (value parsed as YAML: numbers, bools, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override must look like section.field=value, got {text!r}")
    value = yaml.safe_load(raw) if raw else ""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_config(source: str | None = None, overrides: typing.Sequence[str] | dict = ()) -> RunConfig:
    """``source``: a preset name, a YAML path, or None (defaults). Overrides win over the file."""
    data: dict[str, Any] = {}
    if source in PRESETS:
        data = PRESETS[source]
    elif source:
        if not os.path.exists(source):
            raise ConfigError(f"config file {source!r} not found (presets: {sorted(PRESETS)})")
        with open(source) as f:
            data = yaml.safe_load(f) or {}
    if isinstance(overrides, dict):
        data = _merge(data, overrides)
    else:
        for item in overrides:
            data = _merge(data, parse_override(item))
    return from_dict(RunConfig, data)


def dump_yaml(config: RunConfig) -> str:
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return yaml.safe_dump(plain(to_dict(config)), sort_keys=False)
