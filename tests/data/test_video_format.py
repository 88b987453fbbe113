"""Video records in the Model Garden / DMVR key convention read through video_format.parse_video."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from components import video_format


def _model_garden_record(frames, label, label_index, filename, frame_rate=30.0):
    """Written with the raw tf.train API and literal keys, the way Model Garden's and DMVR's UCF101/Kinetics
    generators write them (video/filename instead of example/id), independent of video_format's writer."""
    seq = tf.train.SequenceExample()
    ctx = seq.context.feature
    ctx["video/filename"].bytes_list.value.append(filename.encode())
    ctx["clip/label/index"].int64_list.value.append(label_index)
    ctx["clip/label/string"].bytes_list.value.append(label.encode())
    ctx["image/height"].int64_list.value.append(frames.shape[1])
    ctx["image/width"].int64_list.value.append(frames.shape[2])
    ctx["image/frame_rate"].float_list.value.append(frame_rate)
    feature_list = seq.feature_lists.feature_list["image/encoded"]
    for frame in frames:
        ok, jpeg = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        feature_list.feature.add().bytes_list.value.append(jpeg.tobytes())
    return seq.SerializeToString()


def _gradient_frames(num_frames=5, height=24, width=40):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([xx * 6 + t * 10, yy * 10, np.full_like(xx, 200 - t * 30)], axis=-1)
                     for t in range(num_frames)]).clip(0, 255).astype(np.uint8)


def test_model_garden_record_parses_with_documented_keys(tmp_path):
    frames = _gradient_frames()
    path = str(tmp_path / "ucf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(_model_garden_record(frames, "ApplyLipstick", 1, "v_ApplyLipstick_g01_c01.avi"))
    raw = next(iter(tf.data.TFRecordDataset(path))).numpy()

    video = video_format.parse_video(raw, source=path)
    assert video.video_id == "v_ApplyLipstick_g01_c01.avi"
    assert (video.label, video.label_index) == ("ApplyLipstick", 1)
    assert (video.height, video.width, video.frame_rate) == (24, 40, 30.0)
    assert len(video.jpeg_frames) == 5
    decoded = np.stack([video_format.decode_jpeg(j) for j in video.jpeg_frames])
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3      # JPEG, not garbage
    assert np.abs(decoded[4].astype(int) - frames[0].astype(int)).mean() > 20  # frame order kept


def test_written_records_parse_in_graph_like_model_garden_decoders():
    frames = _gradient_frames(3)
    jpegs = [video_format.encode_jpeg(f) for f in frames]
    record = video_format.make_video_example("a/b", jpegs, "walk", 2, 24, 40, 25.0).SerializeToString()
    keys = video_format.DEFAULT_VIDEO_KEYS
    context, sequence = tf.io.parse_single_sequence_example(
        record,
        context_features={keys.label_index: tf.io.FixedLenFeature([], tf.int64),
                          keys.label_string: tf.io.FixedLenFeature([], tf.string),
                          keys.video_ids[0]: tf.io.FixedLenFeature([], tf.string)},
        sequence_features={keys.frames: tf.io.FixedLenSequenceFeature([], tf.string)})
    assert int(context[keys.label_index]) == 2 and context[keys.label_string].numpy() == b"walk"
    assert context[keys.video_ids[0]].numpy() == b"a/b"
    images = tf.map_fn(tf.io.decode_jpeg, sequence[keys.frames], fn_output_signature=tf.uint8)
    assert tuple(images.shape) == (3, 24, 40, 3)


def test_record_without_frames_names_the_source():
    seq = tf.train.SequenceExample()
    seq.context.feature["video/filename"].bytes_list.value.append(b"x.avi")
    with pytest.raises(video_format.VideoRecordError, match="shard-3.*image/encoded"):
        video_format.parse_video(seq.SerializeToString(), source="shard-3")
    with pytest.raises(video_format.VideoRecordError, match="not a tf.train.SequenceExample"):
        video_format.parse_video(b"\xff\x00garbage", source="shard-3")


@pytest.mark.parametrize("shape", [(8, 32, 32, 3), (1, 1, 1, 3), (3, 17, 200, 3), (0, 4, 4, 3), (2, 0, 5, 3)])
def test_serialize_frames_is_byte_identical_to_tensorflow(shape):
    frames = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for clip in (frames, frames[:, :, ::-1]):   # a strided view serializes in C order too
        ours = video_format.serialize_frames(clip)
        assert ours == tf.make_tensor_proto(clip).SerializeToString()
        np.testing.assert_array_equal(tf.io.parse_tensor(ours, tf.uint8).numpy(), clip)


def test_serialize_frames_rejects_non_clip_arrays():
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\].*float32"):
        video_format.serialize_frames(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        video_format.serialize_frames(np.zeros((4, 4, 3), np.uint8))


def test_bgr_decode_is_contiguous_and_the_rgb_decode_is_its_channel_reversal():
    frame = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data = video_format.encode_jpeg(frame)
    bgr = video_format.decode_jpeg_bgr(data)
    assert bgr.flags["C_CONTIGUOUS"] and bgr.shape == (24, 40, 3)
    np.testing.assert_array_equal(video_format.decode_jpeg(data), bgr[:, :, ::-1])
    with pytest.raises(ValueError, match="not a decodable"):
        video_format.decode_jpeg_bgr(b"\xff\xd8 not really a jpeg")


# ---- clip frame formats: raw uint8 and JPEG per frame ------------------------------------------------------

def _demo_clip(t=4, size=32, seed=0):
    """A clip cut from a demo video (object on a textured background, noise): what ClipGen stores."""
    from pipeline.demo_data import DEMO_CLASSES, make_demo_video
    video = make_demo_video(DEMO_CLASSES[seed % len(DEMO_CLASSES)], np.random.default_rng(seed),
                            frame_range=(t, t + 1), side_range=(size, size + 1))
    return np.ascontiguousarray(video[:t, :size, :size])


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("t", [4, 1, 0])
def test_jpeg_frames_serialize_byte_identical_to_tensorflow(t):
    clip = _demo_clip(t=max(t, 1))[:t]
    ours = video_format.serialize_jpeg_frames(clip, quality=80)
    jpegs = [video_format.encode_jpeg(frame, 80) for frame in clip]
    assert ours == tf.make_tensor_proto(np.array(jpegs, dtype=object).reshape([t])).SerializeToString()
    assert list(tf.io.parse_tensor(ours, tf.string).numpy()) == jpegs


def test_both_formats_decode_in_graph_even_mixed_in_one_batch():
    clips = [_demo_clip(seed=0), _demo_clip(seed=2)]
    shape = clips[0].shape
    values = [video_format.clip_frames_bytes(clips[0], "raw"), video_format.clip_frames_bytes(clips[1], "jpeg"),
              video_format.clip_frames_bytes(clips[1], "jpeg", jpeg_quality=50)]
    decoded = video_format.decode_frames_tensor(tf.constant(values), shape).numpy()
    assert decoded.shape == (3, *shape) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0], clips[0])        # raw: lossless
    for i in (1, 2):  # JPEG: exactly OpenCV's decode of the stored bytes (what ClipGen would have seen) ...
        stored = tf.io.parse_tensor(values[i], tf.string).numpy()
        np.testing.assert_array_equal(decoded[i], np.stack([video_format.decode_jpeg(j) for j in stored]))
        np.testing.assert_array_equal(video_format.parse_clip_frames(values[i]), decoded[i])
    # ... and near the source pixels, nearer at the higher quality (the demo's per-pixel noise costs JPEG most:
    # 29.5 / 26.6 dB here at q90 / q50); at 32x32 about 1/3 of raw's bytes (a frame's headers take ~600 bytes)
    assert _psnr(decoded[1], clips[1]) > 28 and _psnr(decoded[1], clips[1]) > _psnr(decoded[2], clips[1]) + 2
    assert len(values[1]) < 0.4 * len(values[0])


@pytest.mark.parametrize("make, named", [
    (lambda c: video_format.clip_frames_bytes(c[:3], "raw"), "got a raw clip of shape"),
    (lambda c: video_format.clip_frames_bytes(c[:3], "jpeg"), "got JPEG frames of shape"),
    (lambda c: video_format.clip_frames_bytes(c[:, :16], "jpeg"), "got JPEG frames of shape"),
    (lambda c: video_format.serialize_jpeg_frames(c[:0]), "got JPEG frames of shape"),
    (lambda c: tf.make_tensor_proto(np.array([video_format.encode_jpeg(c[0]), video_format.encode_jpeg(c[1, :16]),
                                              video_format.encode_jpeg(c[2]), video_format.encode_jpeg(c[3])],
                                             dtype=object)).SerializeToString(), "frames of different sizes"),
    (lambda c: tf.make_tensor_proto(c.astype(np.float32)).SerializeToString(), "dtype uint8 \\(raw\\) or string"),
    (lambda c: b"not a tensor", "dtype uint8 \\(raw\\) or string"),
])
def test_a_clip_of_another_shape_or_kind_is_refused_naming_it(make, named):
    clip = _demo_clip()
    with pytest.raises(tf.errors.InvalidArgumentError, match=named):
        video_format.decode_frames_tensor(tf.constant([make(clip)]), clip.shape)


def test_a_jpeg_claiming_a_huge_size_is_refused_from_its_header_before_decoding():
    clip = _demo_clip()
    jpeg = bytearray(video_format.encode_jpeg(clip[0]))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2          # claims 30000x30000 (2.7 GB decoded)
    value = tf.make_tensor_proto(np.array([bytes(jpeg)] * 4, dtype=object)).SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="got JPEG frames of shape"):
        video_format.decode_frames_tensor(tf.constant([value]), clip.shape)


def test_frame_format_arguments_are_checked():
    clip = _demo_clip()
    with pytest.raises(ValueError, match="frame_format must be one of \\('raw', 'jpeg'\\), got 'png'"):
        video_format.clip_frames_bytes(clip, "png")
    for quality in (0, 101, 90.0, True):
        with pytest.raises(ValueError, match="jpeg_quality must be an int in \\[1, 100\\]"):
            video_format.clip_frames_bytes(clip, "jpeg", jpeg_quality=quality)
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        video_format.serialize_jpeg_frames(clip[0])
