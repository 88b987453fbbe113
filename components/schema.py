"""ClipSchemaGen: the Schema of clip records, written from the one feature spec in video_format.

Transform needs a Schema; inferring it with StatisticsGen/SchemaGen would scan every clip's frame bytes to learn
what we already define in code, so we write it directly (exact, and free).
"""
import os

import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from components.video_format import clip_feature_spec

SCHEMA_FILE = "schema.pbtxt"


def clip_schema():
    return tft.DatasetMetadata.from_feature_spec(clip_feature_spec(with_label=True)).schema


@tfx.dsl.components.component
def ClipSchemaGen(schema: tfx.dsl.components.OutputArtifact[standard_artifacts.Schema]) -> None:
    io_utils.write_pbtxt_file(os.path.join(schema.uri, SCHEMA_FILE), clip_schema())
