"""The clip sampling policy, to the exact index: windows, looping, seeds, resize and crop boxes."""
import pytest

from components import clip_sampling as cs


# ---- seeds ----------------------------------------------------------------------------------------------

def test_derive_seed_is_pinned_across_processes_and_versions():
    # Computed once in another process: Python's salted hash() would give a different value per process.
    assert cs.derive_seed(0, "v1") == 859707347097777939
    assert cs.derive_seed(0, "v1") < 2 ** 63


def test_derive_seed_depends_on_each_input():
    seeds = {cs.derive_seed(0, "v1"), cs.derive_seed(1, "v1"), cs.derive_seed(0, "v2"), cs.derive_seed(0, "v1", epoch=1)}
    assert len(seeds) == 4


# ---- eval windows -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, t, s, k, expected", [
    (20, 4, 2, 3, [0, 7, 13]),        # span 7, last start 13: 0, 6.5 rounds up, 13
    (20, 4, 2, 2, [0, 13]),           # first and last window
    (20, 4, 2, 1, [6]),               # one clip: the centre window
    (20, 4, 2, 5, [0, 3, 7, 10, 13]),  # 0, 3.25, 6.5, 9.75, 13
    (7, 4, 2, 3, [0, 0, 0]),          # exactly one window fits
    (16, 16, 1, 2, [0, 0]),
    (100, 8, 1, 4, [0, 31, 61, 92]),  # last start 92: 0, 30.67, 61.33, 92
])
def test_eval_window_starts_are_uniform_and_cover_the_video(n, t, s, k, expected):
    starts = cs.eval_window_starts(n, t, s, k)
    assert starts == expected
    assert starts[0] == 0 or k == 1
    assert max(starts) + cs.window_span(t, s) <= n


def test_eval_windows_of_short_video_loop_evenly_over_one_period():
    # 5 frames, window of 7 (T=4, S=2): loops.
    assert cs.eval_window_starts(5, 4, 2, 2) == [0, 2]
    windows = cs.sample_windows("eval", 5, 4, 2, 2)
    assert [w.frames for w in windows] == [(0, 2, 4, 1), (2, 4, 1, 3)]
    assert [w.clip_index for w in windows] == [0, 1]


def test_frame_indices_step_by_stride_and_wrap():
    assert cs.frame_indices(3, 20, 4, 2) == [3, 5, 7, 9]
    assert cs.frame_indices(0, 3, 5, 1) == [0, 1, 2, 0, 1]   # 3-frame video, 5-frame clip
    assert cs.frame_indices(2, 1, 3, 4) == [0, 0, 0]          # a single frame repeats


# ---- train windows ----------------------------------------------------------------------------------------

def test_train_windows_are_deterministic_for_a_seed():
    seed = cs.derive_seed(7, "video-a")
    assert cs.train_window_starts(100, 8, 2, 6, seed) == cs.train_window_starts(100, 8, 2, 6, seed)
    assert cs.sample_windows("train", 100, 8, 2, 6, seed) == cs.sample_windows("train", 100, 8, 2, 6, seed)


def test_train_windows_differ_between_seeds_and_videos():
    draws = {tuple(cs.train_window_starts(1000, 8, 2, 6, cs.derive_seed(g, vid)))
             for g in (0, 1, 2) for vid in ("a", "b", "c")}
    assert len(draws) == 9


def test_train_windows_stay_inside_the_video_and_reach_every_start():
    # 10 frames, span 7: starts 0..3 are the only windows that fit.
    seen = set()
    for video in range(50):
        starts = cs.train_window_starts(10, 4, 2, 4, cs.derive_seed(0, f"v{video}"))
        assert all(0 <= s <= 3 for s in starts)
        seen.update(starts)
    assert seen == {0, 1, 2, 3}


def test_train_windows_of_short_video_start_anywhere_and_loop():
    seen = set()
    for video in range(40):
        for w in cs.sample_windows("train", 5, 4, 2, 2, cs.derive_seed(0, f"v{video}")):
            assert 0 <= w.start < 5
            assert w.frames == tuple((w.start + 2 * t) % 5 for t in range(4))
            seen.add(w.start)
    assert seen == {0, 1, 2, 3, 4}


# ---- resize and crop -------------------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, short, oh, ow, expected", [
    (48, 64, 32, 32, 32, (32, 43)),    # landscape: short side 32, long side 64 * 32 / 48
    (64, 48, 32, 32, 32, (43, 32)),    # portrait
    (240, 320, 112, 112, 112, (112, 149)),
    (48, 64, 16, 16, 40, (30, 40)),    # short side 16 would make the width 21 < 40: scale up to fit the crop
    (10, 10, 64, 64, 64, (64, 64)),    # upscaling a tiny frame
])
def test_resized_shape(h, w, short, oh, ow, expected):
    assert cs.resized_shape(h, w, short, oh, ow) == expected
    rh, rw = cs.resized_shape(h, w, short, oh, ow)
    assert rh >= oh and rw >= ow


def test_default_short_side_is_the_larger_crop_side():
    assert cs.default_short_side(64, 64) == 64
    assert cs.default_short_side(112, 160) == 160


def test_center_crop_box():
    assert cs.center_crop_box(32, 43, 32, 32) == cs.CropBox(0, 5, 32, 32)
    assert cs.center_crop_box(40, 50, 32, 32) == cs.CropBox(4, 9, 32, 32)


def test_eval_crops_slide_along_the_longer_free_axis_from_edge_to_edge():
    # Landscape 32x43: left, centre, right; the centre one is the centre crop.
    assert cs.eval_crop_boxes(32, 43, 32, 32, 3) == [cs.CropBox(0, 0, 32, 32), cs.CropBox(0, 6, 32, 32),
                                                      cs.CropBox(0, 11, 32, 32)]
    assert cs.eval_crop_boxes(32, 43, 32, 32, 1) == [cs.center_crop_box(32, 43, 32, 32)]
    # Portrait 50x40 (free 18 down, 8 across): top, centre, bottom, centred across.
    assert cs.eval_crop_boxes(50, 40, 32, 32, 3) == [cs.CropBox(0, 4, 32, 32), cs.CropBox(9, 4, 32, 32),
                                                      cs.CropBox(18, 4, 32, 32)]
    # More crops than free pixels: still in order, inside the frame; a frame the crop's size: all the same box.
    boxes = cs.eval_crop_boxes(32, 34, 32, 32, 5)
    assert [b.left for b in boxes] == [0, 1, 1, 2, 2] and all(b.top == 0 for b in boxes)
    assert set(cs.eval_crop_boxes(32, 32, 32, 32, 3)) == {cs.CropBox(0, 0, 32, 32)}
    with pytest.raises(ValueError, match="crops must be >= 1"):
        cs.eval_crop_boxes(32, 43, 32, 32, 0)


def test_parse_views():
    assert cs.parse_views("10x3") == (10, 3) and cs.parse_views(" 3 X 1 ") == (3, 1)
    for bad in ("3", "0x1", "3x0", "3x1x2", "axb", "", 3):
        with pytest.raises(ValueError, match=r"views must be 'TxS'.*got"):
            cs.parse_views(bad)


def test_random_crop_box_is_seeded_inside_the_frame_and_varies_per_clip():
    seed = cs.derive_seed(0, "v")
    boxes = [cs.random_crop_box(40, 60, 32, 32, seed, i) for i in range(20)]
    assert boxes == [cs.random_crop_box(40, 60, 32, 32, seed, i) for i in range(20)]
    assert all(0 <= b.top <= 8 and 0 <= b.left <= 28 and (b.height, b.width) == (32, 32) for b in boxes)
    assert len({(b.top, b.left) for b in boxes}) > 5


def test_crop_that_does_not_fit_is_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        cs.center_crop_box(30, 40, 32, 32)


# ---- argument validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, match", [
    (lambda: cs.eval_window_starts(0, 4, 1, 1), ValueError, "num_video_frames"),
    (lambda: cs.eval_window_starts(10, 4, 1, 0), ValueError, "clips_per_video"),
    (lambda: cs.window_span(4, 0), ValueError, "frame_stride"),
    (lambda: cs.window_span("4", 1), TypeError, "clip_length"),
    (lambda: cs.window_span(True, 1), TypeError, "clip_length"),
    (lambda: cs.train_window_starts(10, 4, 1, 1, seed=-1), ValueError, "seed"),
    (lambda: cs.sample_windows("test", 10, 4, 1, 1), ValueError, "mode"),
    (lambda: cs.derive_seed(0, b"v1"), TypeError, "video_id"),
    (lambda: cs.resized_shape(0, 10, 8, 8, 8), ValueError, "height"),
])
def test_invalid_arguments_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
