"""The schema of ClipGen's clip Examples, for Transform's ``schema`` input (the ClipSchemaGen component).

Derived from the one feature spec in video_format rather than inferred by StatisticsGen + SchemaGen: the clip
format is fixed by contract, and computing statistics over the frame bytes of every clip would only cost time.
"""
import os

from tfx.dsl.component.experimental.annotations import OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.video_format import clip_feature_spec

SCHEMA_FILENAME = "schema.pbtxt"


def clip_schema(with_label: bool = True):
    """tensorflow_metadata Schema proto of clip Examples.

    A schema cannot hold the default values of video_format.clip_feature_spec (TFT rejects a FixedLenFeature
    with a default), so here every feature is required: ClipGen always writes all of them. Serving parses with
    clip_feature_spec itself, which keeps the defaults for requests that omit video id or clip index."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils
    spec = {name: tf.io.FixedLenFeature(f.shape, f.dtype) if isinstance(f, tf.io.FixedLenFeature) else f
            for name, f in clip_feature_spec(with_label=with_label).items()}
    return schema_utils.schema_from_feature_spec(spec)


def write_clip_schema(directory: str, with_label: bool = True) -> str:
    """Write the clip schema as text proto to ``<directory>/schema.pbtxt`` and return the path."""
    from tfx.utils import io_utils
    if not isinstance(directory, str) or not directory:
        raise ValueError(f"directory must be a non-empty path string, got {directory!r}")
    path = os.path.join(directory, SCHEMA_FILENAME)
    io_utils.write_pbtxt_file(path, clip_schema(with_label))
    return path



@component
def ClipSchemaGen(schema: OutputArtifact[standard_artifacts.Schema]) -> None:
    """Writes the clip Schema for Transform (exact, from the feature spec; no statistics pass)."""
    write_clip_schema(schema.uri)
