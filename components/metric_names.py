"""The names of the classification metrics the Evaluator reports and the gate may threshold (no TensorFlow here:
``pipeline.config`` checks ``gate.metric`` at load time).

Each statistic is reported at clip level (each clip on its own) and at video level (clip probabilities averaged per
video): ``accuracy``, ``top_k_accuracy`` and ``mean_class_accuracy`` (the mean over classes of each class's share
of right answers). TFMA names the clip-level ones as Keras does (``sparse_categorical_accuracy``,
``top_<k>_accuracy``) and the video-level ones ``video_accuracy``, ``video_top_<k>_accuracy``,
``video_mean_class_accuracy``.
"""
from __future__ import annotations

STATISTICS = ("accuracy", "top_k_accuracy", "mean_class_accuracy")
LEVELS = ("clip", "video")
GATE_METRICS = (*STATISTICS, *(f"video_{s}" for s in STATISTICS))


def metric_name(statistic: str, level: str, k: int = 1) -> str:
    """The TFMA name of ``statistic`` at ``level`` (top-k with this ``k``)."""
    if statistic not in STATISTICS or level not in LEVELS:
        raise ValueError(f"statistic must be one of {STATISTICS} and level one of {LEVELS}, got {statistic!r}, "
                         f"{level!r}")
    base = {"accuracy": "accuracy", "top_k_accuracy": f"top_{k}_accuracy",
            "mean_class_accuracy": "mean_class_accuracy"}[statistic]
    if level == "video":
        return f"video_{base}"
    return "sparse_categorical_accuracy" if statistic == "accuracy" else base


def gate_metric_name(gate_metric: str, top_k: int) -> str:
    """The TFMA name of a ``gate.metric`` (``top_k_accuracy`` with top_k 5: ``top_5_accuracy``)."""
    if gate_metric not in GATE_METRICS:
        raise ValueError(f"the gate metric must be one of {GATE_METRICS}, got {gate_metric!r}")
    if gate_metric.startswith("video_"):
        return metric_name(gate_metric[len("video_"):], "video", top_k)
    return metric_name(gate_metric, "clip", top_k)
