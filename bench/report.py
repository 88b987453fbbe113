"""results.json and the markdown table of bench/README.md (written between two marker lines)."""
from __future__ import annotations

import json
import os

BEGIN = "<!-- bench:begin -->"   # `python -m bench` rewrites what lies between the markers
END = "<!-- bench:end -->"

TARGETS = {"train_speedup": 1.5, "infer_speedup": 2.0, "infer_mfu": 0.8, "train_mfu": 0.5,
           "input_over_consumption": 3.0, "clipgen_of_decode_limit": 0.5}


def _mark(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return "met" if value >= target else "**missed**"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


MODES = (("train", "training"), ("infer", "inference"))
PRECISION_LEVERS = ("fast", "float32", "bf16")   # the defaults and the precision lever(s) measured beside them


def _precision_lever_name(lever: str, r: dict) -> str:
    if lever == "fast":
        return f"project defaults ({r['precision']})"
    return {"float32": "`precision: float32`", "bf16": "`precision: bfloat16`"}[lever]


def _row(what: str, measured: str, ratio: float, target: float | None = None, fmt: str = "{:.2f}x") -> str:
    shown_target = "" if target is None else ("≥ " + fmt.format(target))
    return f"| {what} | {measured} | {fmt.format(ratio)} | {shown_target} | {_mark(ratio, target)} |"


# Issue #11's float32 targets on a CPU without AVX-512 (against the same plain reference; no MFU target there).
CAPPED_TARGETS = {"train_speedup": 1.5, "infer_speedup": 1.5}


def _model_rows(model: dict, where: str = "", targets: dict = TARGETS) -> list[str]:
    """The speed, reference-MFU and MFU rows of a ``model`` section; ``where`` qualifies each clip (e.g. the ISA cap),
    ``targets`` are the defaults' ("fast") targets."""
    rows = []
    for clip, r in model.items():
        for lever in PRECISION_LEVERS:
            if f"train_{lever}_speedup" not in r:
                continue
            name = _precision_lever_name(lever, r)
            for mode, label in MODES:
                batch = r[f"{mode}_batch"]
                rows.append(_row(f"{label} {clip}{where}, batch {batch}: {name} ÷ plain Keras reference",
                                 f"{r[f'{mode}_{lever}_clips_s']:.2f} vs {r[f'{mode}_{lever}_reference_clips_s']:.2f} "
                                 "clips/s", r[f"{mode}_{lever}_speedup"],
                                 targets.get(f"{mode}_speedup") if lever == "fast" else None))
        for mode, label in MODES:
            if f"{mode}_reference_mfu" in r:
                mfu = r[f"{mode}_reference_mfu"]
                rows.append(_row(f"{label} {clip}{where}: the plain reference's own MFU; a float32 model doing its FLOPs at "
                                 f"the fp32 matmul's full rate would be {1 / mfu:.2f}x it, at most",
                                 f"{mfu * r['matmul_gflops_s']:.0f} vs {r['matmul_gflops_s']:.0f} GFLOP/s", mfu,
                                 fmt="{:.0%}"))
        for lever in PRECISION_LEVERS:
            if f"train_{lever}_mfu" not in r:
                continue
            name = _precision_lever_name(lever, r)
            for mode, label in MODES:
                flops = f"{r['gflops_per_clip']:.2f} GFLOPs/clip{', ×3 for training' if mode == 'train' else ''}"
                mfu = r[f"{mode}_{lever}_mfu"]
                matmul = r[f"{lever}_matmul_gflops_s"]
                rows.append(_row(f"MFU {label} {clip}{where}, {name} ({flops}) ÷ fp32 matmul",
                                 f"{mfu * matmul:.0f} vs {matmul:.0f} GFLOP/s", mfu,
                                 targets.get(f"{mode}_mfu") if lever == "fast" else None, fmt="{:.0%}"))
                if f"{mode}_{lever}_mfu_bf16" in r:
                    mfu, matmul = r[f"{mode}_{lever}_mfu_bf16"], r[f"{lever}_matmul_bf16_gflops_s"]
                    rows.append(_row(f"MFU {label} {clip}{where}, {name} ÷ bfloat16 matmul (its own peak)",
                                     f"{mfu * matmul:.0f} vs {matmul:.0f} GFLOP/s", mfu, fmt="{:.0%}"))
    return rows


SERVING_CLASSES = (("this_cpu", "this CPU"),
                   ("avx2", "as on an AVX2 CPU (float32: oneDNN capped at AVX2; bfloat16: TF's Eigen kernels, "
                            "which TF runs bfloat16 on without AVX-512)"))


def _serving_rows(serving: dict) -> list[str]:
    """bench.serving_rate: the bfloat16 export's serving rate over the float32 export's, per CPU class."""
    rows = []
    for clip, r in serving.items():
        for key, where in SERVING_CLASSES:
            if key in r:
                s = r[key]
                rows.append(_row(f"serving {clip}, batch {s['batch']}, {where}: bfloat16 export ÷ float32 export "
                                 f"(`serving_frames`; probabilities within {s['max_prob_diff']:.0e})",
                                 f"{s['bfloat16_clips_s']:.1f} vs {s['float32_clips_s']:.1f} clips/s",
                                 s["bf16_speedup"]))
    return rows


def markdown(results: dict) -> str:
    meta = results["meta"]
    cap = f", oneDNN capped at `ONEDNN_MAX_CPU_ISA={meta['onednn_max_cpu_isa']}`" if meta.get("onednn_max_cpu_isa") else ""
    lines = [f"Run of {meta['started_utc']} UTC, config `{meta['config']}`, {meta['cpus']} CPUs ({meta['cpu']}){cap}, "
             f"TF {meta['tensorflow']}, whole run {meta['seconds']:.0f} s. Every ratio: two timings interleaved "
             f"in the same run (A/B/A/B); model speed-ups are the median of per-round paired ratios.", "",
             "| what | measured (this run) | ratio | target | |", "|---|---|---|---|---|"]
    lines += _model_rows(results.get("model", {}))
    lines += _model_rows(results.get("model_avx2", {}), " under `ONEDNN_MAX_CPU_ISA=AVX2`", CAPPED_TARGETS)
    lines += _serving_rows(results.get("serving", {}))
    if "clipgen" in results:
        c = results["clipgen"]
        best = c[c["best_mode"]]
        if c["of_decode_limit"] is not None:
            lines.append(_row(f"ClipGen steady state ({c['best_mode']}, {c['factor']}× − 1× the demo data) ÷ "
                              "tf.io.decode_jpeg, same frames",
                              f"{best['steady_frames_s']:.0f} vs {c['decode_frames_s']:.0f} frames/s "
                              f"({best['steady_clips_s']:.0f} clips/s)", c["of_decode_limit"],
                              TARGETS["clipgen_of_decode_limit"], fmt="{:.0%}"))
        lines.append(_row(f"ClipGen whole job on the demo data ({c['best_mode']}, start-up "
                          f"{_seconds(best.get('startup_s'))} of {best['seconds']:.1f} s) ÷ tf.io.decode_jpeg",
                          f"{best['frames_s']:.0f} vs {c['decode_frames_s']:.0f} frames/s",
                          best["of_decode_limit"], fmt="{:.0%}"))
    if "input" in results:
        i = results["input"]
        lines.append(_row(f"training input (tf.data + Transform layer) ÷ trainer consumption, {i['clip']} "
                          f"batch {i['batch']}", f"{i['input_clips_s']:.0f} vs {i['train_clips_s']:.1f} clips/s",
                          i["input_over_consumption"], TARGETS["input_over_consumption"]))
    if "multiworker" in results:
        m = results["multiworker"]
        threads = (f"; at most {m['max_threads_2_workers']} threads per worker after {m['epochs']} x "
                   f"{m['steps_per_epoch']} steps" if m.get("max_threads_2_workers") else "")
        lines.append(_row(f"2-worker MWMS step ÷ 1-worker step, global batch {m['global_batch']}, {m['clip']}",
                          f"{m['step_s_2_workers'] * 1e3:.0f} vs {m['step_s_1_worker'] * 1e3:.0f} ms{threads}",
                          m["overhead_ratio"]))
    if "memory" in results:
        r = results["memory"]
        big = r[f"x{r['factor']}"]
        lines.append(_row(f"ClipGen peak RSS (job + Beam workers, `{r['beam_mode']}`), {r['factor']}× ÷ 1× the "
                          f"dataset ({big['videos']} vs "
                          f"{r['x1']['videos']} videos)", f"{big['peak_rss_mb']:.0f} vs {r['x1']['peak_rss_mb']:.0f} MB",
                          r["rss_ratio"]))
    if "demo" in results:
        d = results["demo"]
        lines += ["", f"Demo pipeline, seconds per component (read from `{d['source']}`, run finished "
                      f"{d['finished_utc']} UTC; not re-run by the benchmark):", "",
                  "| " + " | ".join(d["component_seconds"]) + " | total |",
                  "|" + "---|" * (len(d["component_seconds"]) + 1),
                  "| " + " | ".join(f"{s:.1f}" for s in d["component_seconds"].values()) + f" | {d['total_seconds']:.1f} |"]
    lines += ["", "Levers, measured in the same run (ratio to the plain reference timed alongside; > 1 is faster):", "",
              "| lever | clip | training | inference | outputs vs reference |", "|---|---|---|---|---|"]
    labels = {"fast": "project defaults: {precision}; inference on 2D kernels with folded batch norm",
              "float32": "`precision=\"float32\"` (training on Conv3D)",
              "bf16": "`precision=\"bfloat16\"` (mixed precision, 2D kernels)",
              "xla": "project defaults + XLA `jit_compile=True`"}
    runs = [("", clip, r) for clip, r in results.get("model", {}).items()]
    runs += [(" (oneDNN capped at AVX2)", clip, r) for clip, r in results.get("model_avx2", {}).items()]
    for where, clip, r in runs:
        checks = r["checks"]
        for variant, label in labels.items():
            if f"train_{variant}_speedup" in r:
                lines.append(f"| {label.format(precision=r['precision'])}{where} | {clip} | "
                             f"{r[f'train_{variant}_speedup']:.2f}x | {r[f'infer_{variant}_speedup']:.2f}x | max rel. "
                             f"error {checks[f'{variant}_inference_max_rel_error']:.1e} (inference), "
                             f"{checks[f'{variant}_training_max_rel_error']:.1e} (training); top-1 agreement "
                             f"{checks[f'{variant}_top1_agreement']:.0%} |")
    if "runtime" in results:
        r = results["runtime"]
        for name, values in r["settings"].items():
            if name != "default":
                env = " ".join(f"`{k}={v}`" for k, v in values["env"].items())
                lines.append(f"| {env} ({name}), project model in {r['precision']}, batch {r['batch']} | {r['clip']} "
                             f"| {values['train_vs_default']:.2f}x | {values['infer_vs_default']:.2f}x | ratio to TF's "
                             "defaults (own process each, alternated), not to the reference |")
    if "clipgen" in results:
        c = results["clipgen"]
        for mode in ("in_memory_1", "multi_processing"):
            if mode in c:
                r = c[mode]
                big_seconds = r[f"seconds_x{c['factor']}"]
                steady = "n/a" if r["steady_of_decode_limit"] is None else f"{r['steady_of_decode_limit']:.0%}"
                lines.append(f"| Beam `{mode}` for ClipGen | demo, {c['factor']}× demo | | | steady state "
                             f"{steady} of the decode limit; whole job "
                             f"{r['of_decode_limit']:.0%} ({r['seconds']:.1f} s, {c['factor']}×: "
                             f"{big_seconds:.1f} s) |")
        lever = c.get("writer_lever")
        if lever:
            lines.append(f"| clip files gzipped by ISA-L level 1 (ClipGen's writer) instead of zlib level 6 (Beam's "
                         f"`WriteToTFRecord`) | {lever['dataset']} demo, `{lever['mode']}` | | | ClipGen "
                         f"{lever['speedup']:.2f}x faster ({lever['seconds']:.1f} vs {lever['baseline_seconds']:.1f} s), "
                         f"files {lever['size_ratio']:.2f}x the size; "
                         f"{'the same' if lever['same_records'] else '**different**'} records |")
    return "\n".join(lines)


def write(results: dict, out_dir: str, readme: str | None) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    table = markdown(results)
    if readme:
        text = open(readme).read() if os.path.exists(readme) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
        if BEGIN not in text or END not in text:
            text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(readme, "w") as f:
            f.write(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    return table
