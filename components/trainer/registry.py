"""Launchers by name: ``make_launcher("local" | "kubeflow" | "k8s-job" | "vertex", options)``.

The registry names each backend by import path and imports it only when asked for, so it depends on no
backend and no backend depends on it (``launcher`` re-exports ``make_launcher``/``launcher_options`` for
existing callers). Options are keyword arguments of the backend's constructor, given as a mapping or a JSON
object string: they travel as a TFX execution property, so they must stay JSON.
"""
from __future__ import annotations

import importlib
import json
from typing import Any, Mapping

LAUNCHERS: dict[str, str] = {
    "local": "components.trainer.launcher:LocalProcessLauncher",
    "kubeflow": "components.trainer.kubeflow_launcher:KubeflowTFJobLauncher",
    "k8s-job": "components.trainer.k8s_job_launcher:IndexedJobLauncher",
    "vertex": "components.trainer.vertex_launcher:VertexCustomJobLauncher",
}


def launcher_class(name: str) -> type:
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; known: {sorted(LAUNCHERS)}")
    module, _, attr = LAUNCHERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def launcher_options(options: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Launcher keyword options from a mapping, a JSON object string, or None/'' (no options)."""
    if options is None:
        return {}
    if isinstance(options, str):
        try:
            options = json.loads(options) if options.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"launcher options must be a JSON object, got {options!r} ({exc})") from None
    if not isinstance(options, Mapping):
        raise TypeError(f"launcher options must be a mapping or a JSON object, got {options!r}")
    return dict(options)


def make_launcher(name: str, options: Mapping[str, Any] | str | None = None):
    """A launcher by registry name with its keyword options (a dict, or a JSON object string)."""
    cls = launcher_class(name)
    options = launcher_options(options)
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"options for launcher {name!r} must be JSON-serializable: {exc}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for launcher {name!r}: {options!r} ({exc})") from None
