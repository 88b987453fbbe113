"""The typed run config: presets, YAML files, overrides, and clear errors for bad values."""
import os

import pytest

from pipeline.config import ConfigError, RunConfig, dump_yaml, load_config, parse_override


def test_defaults_are_the_demo_and_build_a_training_config():
    config = load_config("demo", {"labels": ["b", "a"]})
    training = config.training_config()
    assert training.workers == 1 and training.global_batch_size == 16 and training.total_steps == 2400
    assert training.shuffle_buffer == 4096   # most of the 4,800 demo train clips: see DEMO_TRAINING
    assert training.clip_shape == config.clips.shape == (8, 32, 32, 3)
    # The demo runs Beam in one process; a run without the preset keeps the multi-process default.
    assert config.beam_args == ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    assert "--direct_running_mode=multi_processing" in load_config(None, {"labels": ["a"]}).beam_args
    assert training.labels == ("b", "a")


def test_yaml_file_then_overrides_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("pipeline_name: my-run\nclips:\n  num_frames: 16\ntraining:\n  epochs: 3\n")
    config = load_config(str(path), ["training.epochs=5", "clips.height=32", "beam_args=[--a, --b]"])
    assert config.pipeline_name == "my-run"
    assert config.clips.num_frames == 16 and config.clips.height == 32
    assert config.training["epochs"] == 5
    assert config.training["workers"] == 1          # untouched demo default survives a partial section
    assert config.beam_args == ("--a", "--b")


def test_dump_and_reload_round_trip(tmp_path):
    config = load_config("smoke", ["labels=[x, y]"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(config))
    assert load_config(str(path)) == config


@pytest.mark.parametrize("override, message", [
    ("trainig.epochs=3", "unknown key"),
    ("training.epoch=3", "epoch"),
    ("training.labels=[a]", "derived"),
    ("clips.num_frames=0", "clips.num_frames must be a positive integer, got 0"),
    ("clips.compression_level=6", "clips.compression_level must be an ISA-L gzip level in [0, 3], got 6"),
    ("pipeline_name=My_Run", "pipeline_name must match"),
    ("gate.min_accuracy=1.5", "gate.min_accuracy must be in [0, 1], got 1.5"),
    ("training.workers=0", "workers"),
    ("data_layout=flat", "data_layout must be 'pre_split' or 'split_by_id'"),
    ("clips.eval_views=3", "clips.eval_views must be 'TxS' with T clips and S crops per clip"),
    ("clips.eval_views=2x0", "clips.eval_views must be 'TxS'"),
    ("clips.clips_per_video_eval=5", "clips.clips_per_video_eval is now clips.eval_views"),
])
def test_bad_values_fail_at_load_time_naming_the_setting(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config("demo", [override])


def test_eval_views_are_windows_by_crops():
    config = load_config("demo", ["clips.eval_views=10x3"])
    assert (config.clips.eval_clips_per_video, config.clips.eval_crops) == (10, 3)
    assert (RunConfig().clips.eval_clips_per_video, RunConfig().clips.eval_crops) == (3, 3)


def test_override_syntax():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("nonsense")


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="no-such.yaml"):
        load_config("no-such.yaml")


def test_labels_are_the_runs_unless_configured():
    assert RunConfig().training_config().labels == ()           # the Trainer takes the run's label map
    assert RunConfig(labels=("up", "down")).training_config().labels == ("up", "down")
    load_config(None, {"ingest": {"train_pattern": "s{SPAN}/train/*", "eval_pattern": "s{SPAN}/eval/*",
                                  "label_map": "s{SPAN}/labels.txt"}})   # a label map per span
    with pytest.raises(ConfigError, match="label_map"):
        load_config(None, {"ingest": {"label_map": "s{SPAN}/labels.txt"}})     # the patterns have no spans


def test_data_layout_chooses_the_ingest_split(tmp_path):
    import json
    from pipeline.pipeline import create_components
    for layout, expected in [("pre_split", {"train", "eval"}), ("split_by_id", {"all"})]:
        config = load_config("smoke", [f"data_layout={layout}", "labels=[a, b]", f"data_dir={tmp_path}"])
        ingest = create_components(config)[0]
        splits = {s["name"] for s in json.loads(ingest.exec_properties["input_config"])["splits"]}
        assert splits == expected, layout


def test_the_beam_runner_section_builds_every_beam_steps_arguments():
    direct = load_config("demo", {"labels": ["a", "b"]})
    assert direct.beam_pipeline_args() == ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    assert direct.local_beam_args() == direct.beam_pipeline_args()
    dataflow = load_config("cluster", {"labels": ["a", "b"], "kubeflow": {"image": "img:1"}, "beam_args": ["--max_num_workers=8"],
                                       "beam": {"runner": "dataflow", "project": "p", "region": "r",
                                                "temp_location": "gs://b/t"}})
    assert dataflow.beam_pipeline_args() == [
        "--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/t",
        "--sdk_container_image=img:1", "--sdk_location=container", "--max_num_workers=8"]
    assert dataflow.local_beam_args() == []
    bad = {"beam": {"runner": "dataflow", "project": "p", "region": "r", "temp_location": "gs://b/t"}}
    with pytest.raises(ConfigError, match="kubeflow.image"):
        load_config("cluster", bad)
    with pytest.raises(ConfigError, match="give it once"):
        load_config("cluster", {**bad, "kubeflow": {"image": "i"}, "beam_args": ["--runner=DirectRunner"]})
    with pytest.raises(ConfigError, match="gs://"):
        load_config("cluster", {"beam": {**bad["beam"], "temp_location": "/tmp/x"}})
    with pytest.raises(ConfigError, match="beam.runner must be one of"):
        load_config("cluster", {"beam": {"runner": "spark"}})
    with pytest.raises(ConfigError, match="beam.environment must be one of"):
        load_config("cluster", {"beam": {"runner": "flink", "environment": "thread"}})
    with pytest.raises(ConfigError, match="beam.parallelism"):
        load_config("cluster", {"beam": {"runner": "flink", "parallelism": 0}})
    with pytest.raises(ConfigError, match="loopback starts its workers"):
        load_config("cluster", {"beam": {"runner": "flink", "environment_config": "localhost:50000"}})
    with pytest.raises(ConfigError, match="beam.environment docker"):
        load_config("cluster", {"beam": {"runner": "flink", "environment": "docker"}})


def test_flink_runs_the_beam_steps_embedded_here_and_through_a_job_server_on_a_cluster():
    from components.beam_workers import SHARED_JOB_SERVER_RUNNER
    from pipeline.config import DEFAULT_FLINK_CONF_DIR, DEFAULT_FLINK_JOB_SERVER_JAR
    local = load_config("smoke", {"labels": ["a", "b"], "beam": {"runner": "flink"}})
    assert local.beam_pipeline_args() == [      # smoke's DirectRunner arguments are left out
        f"--runner={SHARED_JOB_SERVER_RUNNER}", "--flink_master=[local]", f"--flink_job_server_jar={DEFAULT_FLINK_JOB_SERVER_JAR}",
        f"--flink_conf_dir={DEFAULT_FLINK_CONF_DIR}", "--parallelism=2", "--sdk_worker_parallelism=2",
        "--environment_type=LOOPBACK",
        "--experiments=use_loopback_process_worker"]
    assert local.local_beam_args() == ["--flink_master=[local]",
                                       f"--flink_job_server_jar={DEFAULT_FLINK_JOB_SERVER_JAR}",
                                       "--environment_type=LOOPBACK"]
    assert os.path.isfile(os.path.join(DEFAULT_FLINK_CONF_DIR, "flink-conf.yaml"))
    cluster = load_config("cluster", {"labels": ["a", "b"], "kubeflow": {"image": "img:1"},
                                      "beam_args": ["--max_bundle_size=8"],
                                      "beam": {"runner": "flink", "job_endpoint": "flink-jobserver:8099",
                                               "environment": "external", "parallelism": 8}})
    assert cluster.beam_pipeline_args() == [
        "--runner=PortableRunner", "--job_endpoint=flink-jobserver:8099", "--parallelism=8", "--sdk_worker_parallelism=8",
        "--environment_type=EXTERNAL", "--environment_config=localhost:50000", "--max_bundle_size=8"]
    assert cluster.local_beam_args() == []
    docker = load_config("cluster", {"labels": ["a", "b"], "kubeflow": {"image": "img:1"},
                                     "beam": {"runner": "flink", "job_endpoint": "js:8099", "environment": "docker"}})
    assert docker.beam_pipeline_args()[-2:] == ["--environment_type=DOCKER", "--environment_config=img:1"]


def test_beam_workers_prepare_loopback_process_workers_and_check_the_job_server(tmp_path, monkeypatch):
    import sys

    from components import beam_workers
    from pipeline.config import DEFAULT_FLINK_JOB_SERVER_JAR
    args = load_config("smoke", {"labels": ["a", "b"], "beam": {"runner": "flink"}}).beam_pipeline_args()
    assert beam_workers.uses_process_workers(args)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    beam_workers.put_interpreter_first_on_path()
    assert os.environ["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)   # Beam starts `python -c`
    missing = [a.replace(DEFAULT_FLINK_JOB_SERVER_JAR, str(tmp_path / "none.jar")) for a in args]
    with pytest.raises(FileNotFoundError, match="make standins"):
        beam_workers.prepare(missing)
    assert beam_workers.describe(args) == ("Flink (an embedded Flink cluster, parallelism 2; SDK worker processes "
                                           "of this step)")
    assert beam_workers.describe(["--direct_running_mode=in_memory"]) == "DirectRunner (in_memory, 1 workers)"


def test_clip_frame_format_auto_is_raw_on_cpu_workers_and_jpeg_on_gpu_workers():
    from pipeline.pipeline import clip_store, create_components
    base = ["labels=[a, b]", "ingest.window_spans=2", "ingest.train_pattern=span-{SPAN}/train/*",
            "ingest.eval_pattern=span-{SPAN}/eval/*"]
    for preset in ("demo", "smoke", "cluster"):
        assert load_config(preset, base).clips.frame_format == "auto"
        assert load_config(preset, base).clip_frame_format == "raw"
    assert load_config("cluster", [*base, "kubeflow.worker_gpu=1"]).clip_frame_format == "jpeg"
    assert load_config("cluster", [*base, "kubeflow.worker_gpu=1", "clips.frame_format=raw"]).clip_frame_format == "raw"
    jpeg = load_config("demo", [*base, "clips.frame_format=jpeg", "clips.jpeg_quality=80"])
    assert jpeg.clip_frame_format == "jpeg"
    clipgen = {c.id: c for c in create_components(jpeg)}["ClipGen"]
    assert (clipgen.exec_properties["frame_format"], clipgen.exec_properties["jpeg_quality"]) == ("jpeg", 80)
    # Clips cut in another format are never reused from the clip store (its folder is per clip recipe)...
    raw = load_config("demo", base)
    assert clip_store(raw) != clip_store(jpeg)
    # ... and "auto" shares raw's folder where it resolves to raw.
    assert clip_store(raw) == clip_store(load_config("demo", [*base, "clips.frame_format=raw"]))
    for bad, match in [(["clips.frame_format=png"], "clips.frame_format must be one of"),
                       (["clips.jpeg_quality=0"], "clips.jpeg_quality must be an int in \\[1, 100\\]")]:
        with pytest.raises(ConfigError, match=match):
            load_config("demo", [*base, *bad])
