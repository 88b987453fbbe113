"""Pushes a blessed SavedModel to a TF Serving model base path: ``<base>/<model_name>/<version>/``.

Guarantees (see README "Failure behaviour"):
- a version directory appears atomically: local paths are filled under a hidden staging name (TF Serving only
  considers all-digit names) and renamed in one step; on gs:// every object is written with a
  does-not-exist precondition and ``saved_model.pb`` last, so a half-written version has no model file to load;
- an existing version is never overwritten: versions only grow (max existing + 1 when the clock collides) and a
  taken version makes the push fail instead of replacing it;
- nothing unblessed is pushed: the caller passes the blessing and an unblessed model raises ``NotBlessedError``.
"""

import dataclasses
import logging
import os
import shutil
import time
import uuid


from components import gcs

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"


class NotBlessedError(RuntimeError):
    pass


class VersionExistsError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class PushResult:
    version: int
    path: str


def existing_versions(model_base: str) -> list[int]:
    """All-digit children of ``<base>/<model_name>`` (what TF Serving treats as versions), ascending."""
    if gcs.is_gcs(model_base):
        bucket, prefix = _bucket_and_dir(model_base)
        names = {blob.name[len(prefix):].split("/", 1)[0]
                 for blob in gcs.client().list_blobs(bucket, prefix=prefix)}
    else:
        names = os.listdir(model_base) if os.path.isdir(model_base) else []
    return sorted(int(n) for n in names if n.isdigit())


def latest_version_path(model_base: str) -> str | None:
    """Path of the highest complete version (has saved_model.pb), or None."""
    for version in reversed(existing_versions(model_base)):
        path = _join(model_base, str(version))
        if _exists(_join(path, SAVED_MODEL_FILE)):
            return path
    return None


def next_version(model_base: str, now: float | None = None) -> int:
    """Seconds since epoch, bumped above every existing version so TF Serving picks the new one."""
    candidate = int(now if now is not None else time.time())
    versions = existing_versions(model_base)
    return max([candidate] + [v + 1 for v in versions])


def push_model(saved_model_dir: str, serving_base: str, model_name: str, *, blessed: bool,
               version: int | None = None) -> PushResult:
    if not blessed:
        raise NotBlessedError(f"model {saved_model_dir} is not blessed by the Evaluator; refusing to push it")
    if not _exists(_join(saved_model_dir, SAVED_MODEL_FILE)):
        raise FileNotFoundError(f"{saved_model_dir} holds no {SAVED_MODEL_FILE}: not a SavedModel")
    if not model_name or "/" in model_name:
        raise ValueError(f"model_name must be a non-empty name without '/', got {model_name!r}")
    model_base = _join(serving_base, model_name)
    version = next_version(model_base) if version is None else int(version)
    target = _join(model_base, str(version))
    if gcs.is_gcs(serving_base):
        _push_gcs(saved_model_dir, target)
    else:
        _push_local(saved_model_dir, model_base, target)
    log.info("pushed %s -> %s (version %d)", saved_model_dir, target, version)
    return PushResult(version=version, path=target)


def _push_local(saved_model_dir: str, model_base: str, target: str) -> None:
    os.makedirs(model_base, exist_ok=True)
    if os.path.exists(target):
        raise VersionExistsError(f"version {target} already exists; versions are never overwritten")
    staging = os.path.join(model_base, f".staging-{os.path.basename(target)}-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(saved_model_dir, staging)
        try:
            os.rename(staging, target)  # atomic; fails (ENOTEMPTY/EEXIST) if a concurrent push took it
        except OSError as exc:
            raise VersionExistsError(f"version {target} appeared during the push: {exc}") from None
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _push_gcs(saved_model_dir: str, target: str) -> None:
    """Uploads (local source) or server-side copies (gs:// source, e.g. a Kubeflow pipeline root)."""
    from google.api_core.exceptions import PreconditionFailed

    bucket_name, prefix = _bucket_and_dir(target)
    client = gcs.client()
    bucket = client.bucket(bucket_name)
    if any(True for _ in client.list_blobs(bucket_name, prefix=prefix, max_results=1)):
        raise VersionExistsError(f"version {target} already exists; versions are never overwritten")
    if gcs.is_gcs(saved_model_dir):
        source_bucket_name, source_prefix = _bucket_and_dir(saved_model_dir)
        source_bucket = client.bucket(source_bucket_name)
        files = [b.name[len(source_prefix):] for b in client.list_blobs(source_bucket_name, prefix=source_prefix)]
    else:
        files = _local_files(saved_model_dir)
    files.sort(key=lambda rel: rel == SAVED_MODEL_FILE)  # the model file last: a partial version has none
    try:
        for rel in files:
            # if_generation_match=0: fails if the object exists (a concurrent push of the same version).
            if gcs.is_gcs(saved_model_dir):
                source_bucket.copy_blob(source_bucket.blob(source_prefix + rel), bucket, prefix + rel,
                                        if_generation_match=0)
            else:
                bucket.blob(prefix + rel).upload_from_filename(os.path.join(saved_model_dir, rel),
                                                               if_generation_match=0)
    except PreconditionFailed:
        raise VersionExistsError(f"version {target} was written concurrently; this push stopped") from None


def _local_files(root: str) -> list[str]:
    out = []
    for dirpath, _, filenames in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
    return out


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if gcs.is_gcs(base) else os.path.join(base, *parts)


def _bucket_and_dir(uri: str) -> tuple[str, str]:
    """'gs://b/x/y' -> ('b', 'x/y/'): a prefix that matches only that directory's objects."""
    bucket, name = gcs.split_gcs(uri)
    return bucket, (name.rstrip("/") + "/") if name else ""


def _exists(path: str) -> bool:
    if gcs.is_gcs(path):
        bucket, name = gcs.split_gcs(path)
        return gcs.client().bucket(bucket).blob(name).exists()
    return os.path.exists(path)


# ---- TFX components -----------------------------------------------------------------------------------
# Kept thin: the logic above is what tests call directly. Both run on open-source KFP v2 (no Resolver node):
# the baseline is found by listing the serving base path, not by querying ML Metadata.

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter  # noqa: E402
from tfx.dsl.component.experimental.decorators import component  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402
from tfx.utils import io_utils, path_utils  # noqa: E402

BASELINE_FOUND = "found"


@component
def LatestPushedModel(
    candidate: InputArtifact[standard_artifacts.Model],
    serving_base_dir: Parameter[str],
    model_name: Parameter[str],
    baseline: OutputArtifact[standard_artifacts.Model],
) -> None:
    """Snapshots the model TF Serving currently serves (highest complete version) as the Evaluator's baseline.

    With none pushed yet the artifact is marked ``found=0`` and the Evaluator blesses on value thresholds alone.
    ``candidate`` (the model about to be evaluated) is not read: it ties this lookup to each new model, so TFX's
    cache (keyed on inputs and parameters) cannot hand a new model the baseline looked up for an older one."""
    source = latest_version_path(_join(serving_base_dir, model_name))
    baseline.set_int_custom_property(BASELINE_FOUND, int(source is not None))
    if source is None:
        log.info("no model under %s/%s yet: first run, no baseline", serving_base_dir, model_name)
        return
    io_utils.copy_dir(source, path_utils.serving_model_dir(baseline.uri))
    baseline.set_string_custom_property("source", source)
    log.info("baseline: %s", source)


@component
def ServingPusher(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: OutputArtifact[standard_artifacts.PushedModel],
    serving_base_dir: Parameter[str],
    model_name: Parameter[str],
) -> None:
    """Pushes a blessed model atomically to ``<serving_base_dir>/<model_name>/<version>``; records why not otherwise."""
    blessed = model_blessing.get_int_custom_property("blessed") == 1
    if not blessed:
        pushed_model.set_int_custom_property("pushed", 0)
        log.warning("model not blessed by the Evaluator: not pushed (see the Evaluator's validation result)")
        return
    result = push_model(path_utils.serving_model_path(model.uri), serving_base_dir, model_name, blessed=True)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_destination", result.path)
    pushed_model.set_string_custom_property("pushed_version", str(result.version))
