"""MultiWorkerTrainer in a real TFX LocalDagRunner pipeline (Importers for the clip Examples and the
Transform graph), with one worker: the N=1 case of the launcher, end to end."""
import json
import os

import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx

from components.trainer.component import MultiWorkerTrainer
from components.video_format import make_clip_example
from trainer_test_data import LABELS, training_config


def test_component_definition_validates_up_front(clip_data):
    examples = tfx.dsl.Importer(source_uri=clip_data.examples_uri,
                                artifact_type=tfx.types.standard_artifacts.Examples).with_id("e")
    graph = tfx.dsl.Importer(source_uri=clip_data.transform_graph_uri,
                             artifact_type=tfx.types.standard_artifacts.TransformGraph).with_id("g")
    with pytest.raises(ValueError, match="unknown launcher 'slurm'"):
        MultiWorkerTrainer(examples.outputs["result"], graph.outputs["result"], training_config(), launcher="slurm")
    with pytest.raises(ValueError, match="unknown training config keys"):
        MultiWorkerTrainer(examples.outputs["result"], graph.outputs["result"], '{"labels": ["a", "b"], "lr": 1}')
    with pytest.raises(TypeError, match="config"):
        MultiWorkerTrainer(examples.outputs["result"], graph.outputs["result"], {"labels": ["a", "b"]})


def test_single_worker_pipeline_outputs_serving_model_and_run(clip_data, tmp_path):
    examples = tfx.dsl.Importer(
        source_uri=clip_data.examples_uri, artifact_type=tfx.types.standard_artifacts.Examples,
        properties={"split_names": json.dumps(["train", "eval"])}).with_id("import_examples")
    graph = tfx.dsl.Importer(source_uri=clip_data.transform_graph_uri,
                             artifact_type=tfx.types.standard_artifacts.TransformGraph).with_id("import_transform_graph")
    config = training_config(workers=1, epochs=2, steps_per_epoch=2, eval_steps=1, warmup_cosine=False,
                             optimizer="sgd", learning_rate=0.01)
    trainer = MultiWorkerTrainer(examples.outputs["result"], graph.outputs["result"], config,
                                 launcher="local", launcher_options={"timeout_s": 300})
    mlmd = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(tmp_path / "mlmd.sqlite"))
    pipeline = tfx.dsl.Pipeline(pipeline_name="trainer-test", pipeline_root=str(tmp_path / "root"),
                                metadata_connection_config=mlmd, components=[examples, graph, trainer])
    tfx.orchestration.LocalDagRunner().run(pipeline)

    store = metadata_store.MetadataStore(mlmd)
    (model,) = store.get_artifacts_by_type("Model")
    (model_run,) = store.get_artifacts_by_type("ModelRun")
    serving_dir = os.path.join(model.uri, "Format-Serving")
    assert os.path.isfile(os.path.join(serving_dir, "saved_model.pb"))

    with open(os.path.join(model_run.uri, "training_history.json")) as f:
        history = json.load(f)
    assert history["workers"] == 1 and history["attempts"] == 1
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert all(e["clips_per_s"] > 0 and "val_loss" in e for e in history["epochs"])
    assert tf.io.gfile.glob(os.path.join(model_run.uri, "train", "events.out.tfevents.*")), "no TensorBoard logs"
    from components.trainer.precision import compute_precision
    resolved = compute_precision(config)    # 'auto' resolved once, by the executor, for every worker
    assert config.precision == "auto" and resolved in ("float32", "bfloat16")
    assert model.custom_properties["training_precision"].string_value == resolved
    assert model.custom_properties["serving_precision"].string_value == "float32"
    with open(os.path.join(model_run.uri, "worker_logs", "worker-0.log")) as f:
        log = f.read()
    # One worker: TF's default strategy, no MultiDeviceIterator (training.make_strategy).
    assert "one worker, TF's default strategy: worker 0 of 1 (chief), 1 replicas in sync" in log
    assert f"precision {resolved} (configured: {resolved})" in log
    print(f"\n1-worker pipeline: {history['epochs'][-1]['clips_per_s']:.1f} clips/s in the last epoch")

    served = tf.saved_model.load(serving_dir)
    example = make_clip_example(clip_data.eval_frames[0], clip_data.eval_labels[0], "v", 0)
    out = served.signatures["serving_default"](examples=tf.constant([example.SerializeToString()]))
    assert out["probabilities"].shape == (1, len(LABELS))
    assert out["top_class"].numpy()[0].decode() in LABELS
