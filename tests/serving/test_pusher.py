"""Push safety on a local TF Serving base path: atomic versions, never overwritten, never unblessed."""
import os
import threading

import pytest
import tensorflow as tf

from components import pusher


def _versions(base):
    return sorted(os.listdir(os.path.join(base, "m")))


def test_push_creates_numbered_version_that_loads(tiny_saved_model, tmp_path):
    result = pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=True, version=5)
    assert result.version == 5 and result.path == str(tmp_path / "m" / "5")
    loaded = tf.saved_model.load(result.path)
    assert loaded.signatures["serving_default"](tf.constant([3.0]))["output_0"].numpy().tolist() == [6.0]
    assert _versions(tmp_path) == ["5"]          # no staging leftovers


def test_versions_only_grow_and_never_overwrite(tiny_saved_model, tmp_path):
    first = pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=True, version=2_000_000_000)
    second = pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=True)  # clock < existing: bumped
    assert second.version == first.version + 1
    with pytest.raises(pusher.VersionExistsError):
        pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=True, version=first.version)
    assert pusher.existing_versions(str(tmp_path / "m")) == [first.version, second.version]
    assert pusher.latest_version_path(str(tmp_path / "m")) == second.path


def test_unblessed_model_is_refused(tiny_saved_model, tmp_path):
    with pytest.raises(pusher.NotBlessedError, match="not blessed"):
        pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=False)
    assert not (tmp_path / "m").exists()


def test_not_a_saved_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        pusher.push_model(str(tmp_path / "empty"), str(tmp_path / "serving"), "m", blessed=True)


def test_crash_mid_push_leaves_no_visible_version(tiny_saved_model, tmp_path, monkeypatch):
    # Simulate the process dying after part of the files were copied.
    real_copytree = pusher.shutil.copytree
    calls = {"n": 0}

    def failing_copy(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return pusher.shutil.copy2(src, dst, *args, **kwargs)

    monkeypatch.setattr(pusher.shutil, "copytree",
                        lambda src, dst, *_, **__: real_copytree(src, dst, copy_function=failing_copy))
    with pytest.raises(OSError, match="simulated"):
        pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=True, version=7)
    assert calls["n"] >= 2
    assert pusher.existing_versions(str(tmp_path / "m")) == []
    assert _versions(tmp_path) == []             # staging dir cleaned up


def test_a_reader_never_sees_a_partial_version(tiny_saved_model, tmp_path):
    """A reader polling like TF Serving while pushes run: every version it sees is complete."""
    expected = sorted(os.path.relpath(os.path.join(d, f), tiny_saved_model)
                      for d, _, files in os.walk(tiny_saved_model) for f in files)
    base = str(tmp_path / "m")
    seen_partial, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            for version in pusher.existing_versions(base):
                path = os.path.join(base, str(version))
                files = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
                if files != expected:
                    seen_partial.append((version, files))

    thread = threading.Thread(target=reader)
    thread.start()
    results, errors = [], []

    def push(v):
        try:
            results.append(pusher.push_model(tiny_saved_model, str(tmp_path), "m", blessed=True, version=v))
        except pusher.VersionExistsError as exc:
            errors.append(exc)

    pushers = [threading.Thread(target=push, args=(v,)) for v in (10, 11, 11, 12, 12, 12)]
    for t in pushers:
        t.start()
    for t in pushers:
        t.join()
    stop.set()
    thread.join()
    assert seen_partial == []
    assert sorted(r.version for r in results) == [10, 11, 12]     # each version written exactly once
    assert len(errors) == 3                                        # the losers were told, nothing replaced
    assert pusher.existing_versions(base) == [10, 11, 12]
