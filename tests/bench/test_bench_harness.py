"""The benchmark harness runs end to end on its tiny config (so it cannot rot); no time is asserted."""
import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SECTIONS = ("clipgen", "memory", "input", "multiworker", "model", "model_avx2", "runtime", "serving", "demo")


def _demo_metadata(path: pathlib.Path) -> str:
    """A real ML Metadata store holding two component executions of a run (one cached), as TFX records them."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    node_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    exec_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name="tfx.Component"))
    for name, state in (("bresnet-video.ClipGen", metadata_store_pb2.Execution.COMPLETE),
                        ("bresnet-video.Trainer", metadata_store_pb2.Execution.COMPLETE),
                        ("bresnet-video.Transform", metadata_store_pb2.Execution.CACHED)):
        [context_id] = store.put_contexts([metadata_store_pb2.Context(type_id=node_type, name=name)])
        [execution_id] = store.put_executions([metadata_store_pb2.Execution(type_id=exec_type,
                                                                            last_known_state=state)])
        store.put_attributions_and_associations(
            [], [metadata_store_pb2.Association(context_id=context_id, execution_id=execution_id)])
    return str(path)


def test_tiny_benchmark_fills_every_section_and_the_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro kept\n\n<!-- bench:begin -->\nSTALE TABLE\n<!-- bench:end -->\n\nafter kept\n")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(tmp_path), "--readme", str(readme),
         "--work", str(tmp_path / "work"), "--demo-metadata", _demo_metadata(tmp_path / "metadata.sqlite")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(SECTIONS) <= set(results)
    [model] = results["model"].values()
    # The defaults' precision ("auto": bfloat16 on a CPU with AVX512-BF16/AMX) and the other one are both measured,
    # except bfloat16 where the CPU (or ONEDNN_MAX_CPU_ISA) has no native bfloat16.
    from components.trainer.precision import cpu_has_bfloat16
    others = {"bfloat16": ["float32"], "float32": ["bf16"] if cpu_has_bfloat16() else []}[model["precision"]]
    for key in ("train_fast_clips_s", "train_reference_clips_s", "infer_fast_clips_s", "infer_reference_clips_s",
                "train_fast_mfu", "infer_fast_mfu", "matmul_gflops_s", "gflops_per_clip",
                *(f"infer_{other}_speedup" for other in others),
                "train_xla_speedup", "train_reference_mfu", "infer_reference_mfu"):
        assert model[key] > 0, key
    if not cpu_has_bfloat16():
        assert "infer_bf16_speedup" not in model
    float32_lever = "fast" if model["precision"] == "float32" else "float32"
    assert model["checks"][f"{float32_lever}_inference_max_rel_error"] < 1e-4
    # The model rows again with oneDNN capped at AVX2 (one child run with the cap set before TF loads): float32,
    # the defaults only, checked against the reference to float32 tolerance like any float32 lever.
    [capped] = results["model_avx2"].values()
    assert capped["precision"] == "float32"
    assert capped["train_fast_speedup"] > 0 and capped["infer_fast_speedup"] > 0 and capped["train_fast_mfu"] > 0
    assert capped["checks"]["fast_inference_max_rel_error"] < 1e-4
    assert not any(key.startswith(("train_bf16", "train_float32")) for key in capped)
    clipgen = results["clipgen"]
    assert clipgen["decode_frames_s"] > 0 and clipgen["in_memory_1"]["of_decode_limit"] > 0
    assert clipgen["in_memory_1"]["frames_decoded"] > 0
    # The steady-state rate comes from 4 copies of the data: 4x the frames, whatever the timings.
    assert clipgen["in_memory_1"]["frames_decoded_x4"] == 4 * clipgen["in_memory_1"]["frames_decoded"]
    # ClipGen's writer and Beam's stock writer differ in the files' bytes, never in the records in them.
    assert clipgen["writer_lever"]["same_records"] is True
    assert clipgen["writer_lever"]["bytes"] != clipgen["writer_lever"]["baseline_bytes"]
    assert results["memory"]["rss_ratio"] > 0 and results["memory"]["videos_ratio"] == 4
    assert results["input"]["input_over_consumption"] > 0
    assert results["multiworker"]["overhead_ratio"] > 0
    assert results["multiworker"]["max_threads_2_workers"] > 0   # read from the workers' epoch records (Linux)
    runtime = results["runtime"]["settings"]
    assert runtime["default"]["train_vs_default"] == 1.0
    assert all(s["train_clips_s"] > 0 and s["infer_vs_default"] > 0 for s in runtime.values())
    # Serving: the same weights exported float32 and bfloat16 agree, and both served on this CPU and, where it
    # has AVX-512, as on an AVX2 CPU (bfloat16 on Eigen in a process of its own: oneDNN would abort it there).
    [serving] = results["serving"].values()
    from bench.serving_rate import MAX_PROB_DIFF, cpu_has_avx512
    from components.trainer.precision import onednn_capped_below_bfloat16
    keys = {(True, False): ("this_cpu", "avx2"), (True, True): ("avx2",)}.get(
        (cpu_has_avx512(), onednn_capped_below_bfloat16()), ("this_cpu",))
    assert set(keys) <= set(serving) and not {"this_cpu", "avx2"} - set(keys) & set(serving)
    for key in keys:
        rate = serving[key]
        assert rate["float32_clips_s"] > 0 and rate["bfloat16_clips_s"] > 0 and rate["bf16_speedup"] > 0, key
        assert rate["max_prob_diff"] <= MAX_PROB_DIFF, key
    # The cached execution took no time and is left out; the two completed ones are read.
    assert set(results["demo"]["component_seconds"]) == {"ClipGen", "Trainer"}

    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro kept\n") and text.endswith("\n\nafter kept\n")
    assert "STALE TABLE" not in text
    for words in ("training 4x32x32", "inference 4x32x32", "4x32x32 under `ONEDNN_MAX_CPU_ISA=AVX2`", "MFU", "ClipGen",
                  "MWMS", "peak RSS", "XLA", "serving 4x32x32, batch 2"):
        assert words in text, words


def test_best_of_keeps_each_rate_at_its_best_run_and_the_rest_from_the_first():
    from bench.model_speed import best_of
    runs = [{"precision": "bfloat16", "train_fast_clips_s": 12.6, "train_reference_clips_s": 12.6,
             "matmul_gflops_s": 450.0, "checks": {"top1_agreement": 1.0}},
            {"precision": "bfloat16", "train_fast_clips_s": 21.0, "train_reference_clips_s": 6.3,
             "matmul_gflops_s": 470.0, "checks": {"top1_agreement": 0.9}}]
    assert best_of(runs) == {"precision": "bfloat16", "train_fast_clips_s": 21.0, "train_reference_clips_s": 12.6,
                             "matmul_gflops_s": 470.0, "checks": {"top1_agreement": 1.0}}


def test_speedups_are_medians_of_per_round_paired_ratios():
    import statistics

    from bench.model_speed import best_of
    from bench.timing import interleaved_rounds, paired_ratios
    ticks = iter(range(100))
    rounds = interleaved_rounds({"slow": lambda: next(ticks), "fast": lambda: next(ticks)}, repeats=5, warmup=0)
    assert [len(v) for v in rounds.values()] == [5, 5]
    ratios = paired_ratios({"reference": [2.0, 4.0, 9.0], "lever": [1.0, 1.0, 3.0]}, "reference", "lever")
    assert ratios == [2.0, 4.0, 3.0] and statistics.median(ratios) == 3.0
    # Across child processes the rounds are pooled, not the best rate of each side divided by the other's.
    joined = best_of([{"train_fast_speedup_rounds": [1.0, 2.0]}, {"train_fast_speedup_rounds": [3.0]}])
    assert joined["train_fast_speedup_rounds"] == [1.0, 2.0, 3.0]
