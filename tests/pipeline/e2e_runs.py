"""What the end-to-end runs are made of (used by conftest's `runs` fixture and by test_report)."""
from components.clipgen.extract import MISSING_LABEL, UNKNOWN_LABEL, ZERO_FRAMES

VIDEOS_PER_CLASS = 20
# The demo preset, shortened, with 2 workers (the demo itself trains with 1 on 2 cores: pipeline/config.py), the
# demo's optimizer and 8 classes, on 4x16x16 clips of demo videos
# whose classes also differ in colour (generate_demo_data(class_colours=True)). Motion alone needs ~1,000 steps
# before it clicks (pipeline/config.py), 28 of the suite's minutes on a 2-core AVX2 CPU; the colour cue is learned
# in ~100 (measured: clip accuracy 0.91 on the eval split after 100 steps, 0.94 after 200; chance 0.125), so the
# run still has to learn, export and serve a classifier that works, in 150 steps.
E2E_EPOCHS = 3
E2E = [f"training.epochs={E2E_EPOCHS}", "training.steps_per_epoch=50", "training.eval_steps=2", "training.workers=2",
       "training.batch_size_per_worker=8",
       "training.learning_rate=0.002", "training.warmup_epochs=0.5",
       "clips.num_frames=4", "clips.height=16", "clips.width=16",
       # the gate on a video-level metric (any of the six reported may gate): value and change vs the baseline
       "gate.metric=video_mean_class_accuracy", "gate.min_accuracy=0.3", "gate.max_accuracy_drop=0.05",
       "beam_args=[--direct_running_mode=in_memory, --direct_num_workers=1]"]
WORSE = ["training.epochs=1", "training.steps_per_epoch=2", "training.warmup_epochs=0.0"]
# One broken video per reason in each split: ClipGen must reject them (the run goes on: 3 of >=96 per split).
BAD_VIDEO_REASONS = (MISSING_LABEL, UNKNOWN_LABEL, ZERO_FRAMES)
# ...and one record per split that is no protobuf at all: Ingest dead-letters it.
NOT_A_PROTOBUF = b"\xff\xff\xff this is no SequenceExample"   # wire type 7 in the first tag: never parses
INGEST_REJECT_REASON = "not_a_sequence_example"
REPORT_AFTER_RUN_1 = "report-after-run-1/report.html"


def add_bad_videos(data_dir: str, with_non_protobuf: bool = True) -> None:
    """Writes <split>/videos-bad.tfrecord into each split folder: one video per BAD_VIDEO_REASONS (ClipGen rejects
    them) and, with ``with_non_protobuf``, NOT_A_PROTOBUF (Ingest rejects it)."""
    import numpy as np
    import tensorflow as tf

    from components.video_format import encode_jpeg, make_video_example
    frame = encode_jpeg(np.full((64, 64, 3), 128, np.uint8))
    for split in ("train", "eval"):
        videos = [make_video_example(f"bad-{split}-nolabel", [frame] * 8, None, None, 64, 64, 25.0),
                  make_video_example(f"bad-{split}-label", [frame] * 8, "no_such_class", None, 64, 64, 25.0),
                  make_video_example(f"bad-{split}-empty", [], "grow", None, 64, 64, 25.0)]
        with tf.io.TFRecordWriter(f"{data_dir}/{split}/videos-bad.tfrecord") as writer:
            for video in videos:
                writer.write(video.SerializeToString())
            if with_non_protobuf:
                writer.write(NOT_A_PROTOBUF)
