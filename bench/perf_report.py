"""The speed benchmark's report (reports/perf/README.md): what it measures, its tables, the targets it checks."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench.config import TRAINING_DEFAULTS
from bench.models import RECURRENT
from bench.provenance import cpu_features, cpu_model, device_description

# The sweep's training defaults, clipped as the default sweep clips; each network takes its constructor defaults.
DEFAULTS = {**TRAINING_DEFAULTS, "grad_clip": 1.0}
NAIVE_TEXTS = 256  # the naive baseline is an order of magnitude slower: a fixed slice keeps it affordable
REFERENCE = "lstm"  # every architecture's speed is also given as a ratio to this one's, measured in pairs
# Tokens/s that each architecture should reach against lstm's: what its arithmetic allows, within reach.
RATIO_TARGETS = {"simple_rnn": 2.5, "gru": 1.1, "bilstm": 0.45}
BF16_METHOD = (
    "This CPU runs bf16 products in hardware (AVX512-BF16 or AMX). _bf16 / float32_: median (min-max) of the ratio "
    "within each repetition of the bare pass under `torch.autocast(\"cpu\", torch.bfloat16)`, as Lightning's "
    "`bf16-mixed` trains, to the float32 bare pass. Autocast runs nn.LSTM's and nn.Linear's products in bf16; "
    "bench/kernels.py's SimpleRNN and GRU loops stay float32. _`auto` trains it in_: what `precision: auto` picks "
    "for the architecture on this machine (bench/precision.py).")


def median_spread(values: list[float], digits: int = 0) -> str:
    spread = f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})" if len(values) > 1 else ""
    return f"{statistics.median(values):,.{digits}f}{spread}"


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"{cpu_model()} ({cpu_features() or 'features unknown'}), {os.cpu_count()} cores, GPU: {gpu}; device "
            f"measured: {device_description()}; "
            f"python {platform.python_version()}, torch {torch.__version__}")


def training_table(results: list[dict]) -> tuple[list[str], dict]:
    lines = [
        "| architecture | params | texts x epochs per pass | harness tokens/s | harness texts/s | bare tokens/s "
        "| naive tokens/s | bare ms / step | harness / bare | harness - bare ms / step | harness / naive "
        "| inference ms / 1k texts | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    for r in results:
        s = r["seconds"]
        tok = {k: [r["tokens"] / v for v in s[k]] for k in ("harness", "bare")}
        tok["naive"] = [r["naive_tokens"] / v for v in s["naive"]]
        texts = [r["texts"] * r["epochs"] / v for v in s["harness"]]
        # Harness and bare in the harness's precision run back to back in each repetition: their ratio is taken
        # per repetition, which cancels the drift of this host's speed between repetitions.
        like = s["bf16"] if r["auto_precision"] == "bf16-mixed" and "bf16" in s else s["bare"]
        paired = [b / h for h, b in zip(s["harness"], like)]  # of tokens/s
        bare_step_ms = [b / r["steps"] * 1e3 for b in s["bare"]]
        step_ms = [(h - b) / r["steps"] * 1e3 for h, b in zip(s["harness"], like)]
        overhead = statistics.median(paired)
        speedup = statistics.median(tok["harness"]) / statistics.median(tok["naive"])
        ratios[r["arch"]] = (overhead, speedup)
        lines.append(
            f"| `{r['arch']}` | {r['params']:,} | {r['texts']:,} x {r['epochs']} | {median_spread(tok['harness'])} "
            f"| {median_spread(texts)} | {median_spread(tok['bare'])} | {median_spread(tok['naive'])} "
            f"| {median_spread(bare_step_ms, 2)} | {median_spread(paired, 3)} | {median_spread(step_ms, 2)} "
            f"| {speedup:.2f} | {median_spread(s['latency'], 1)} | {r['peak_rss_mb']:,.0f} |"
        )
    return lines, ratios


def arithmetic_table(results: list[dict], peak_gflops: float) -> tuple[list[str], dict]:
    """Each architecture's training FLOPs per token, the GFLOP/s its bare loop achieves, and its tokens/s against
    lstm's (paired, per repetition) next to what the two FLOP counts allow."""
    lines = ["| architecture | train MFLOP / token | bare GFLOP/s | % of matmul peak | tokens/s / lstm's (paired) "
             "| FLOPs allow | tokens/s / on torch.nn's layers (paired) |", "|---|---|---|---|---|---|---|"]
    reference = next((r for r in results if r["arch"] == REFERENCE), None)
    ratios = {}
    for r in results:
        gflops = [r["tokens"] * r["flops_per_token"] / v / 1e9 for v in r["seconds"]["bare"]]
        paired = [lstm / bare for lstm, bare in zip(r["seconds"].get(REFERENCE, []), r["seconds"]["bare"])]
        ratios[r["arch"]] = statistics.median(paired) if paired else 1.0
        to_torch_nn = [nn / bare for nn, bare in zip(r["seconds"].get("torch_nn", []), r["seconds"]["bare"])]
        allows = f"{reference['flops_per_token'] / r['flops_per_token']:.2f}" if reference else "–"
        lines.append(f"| `{r['arch']}` | {r['flops_per_token'] / 1e6:.3f} | {median_spread(gflops, 1)} "
                     f"| {100 * statistics.median(gflops) / peak_gflops:.0f} "
                     f"| {median_spread(paired, 2) if paired else '1 (the reference)'} | {allows} "
                     f"| {median_spread(to_torch_nn, 2) if to_torch_nn else '–'} |")
    return lines, ratios


def bf16_table(results: list[dict]) -> tuple[list[str], dict]:
    """Each architecture's bare tokens/s under bf16 autocast against float32 (paired, per repetition), and the
    precision `precision: auto` trains it in on this machine. Empty where the CPU has no bf16 engine."""
    lines = ["| architecture | bf16 / float32 tokens/s (paired) | `auto` trains it in |", "|---|---|---|"]
    speedups = {}
    for r in results:
        if "bf16" in r["seconds"]:
            paired = [fp32 / bf16 for fp32, bf16 in zip(r["seconds"]["bare"], r["seconds"]["bf16"])]
            speedups[r["arch"]] = (statistics.median(paired), r["auto_precision"])
            lines.append(f"| `{r['arch']}` | {median_spread(paired, 2)} | {r['auto_precision']} |")
    return (lines if speedups else []), speedups


def bf16_checks(speedups: dict) -> list[tuple[str, bool]]:
    """`auto`'s bf16 pays wherever it picks it (bench/precision.py)."""
    picked = {arch: s for arch, (s, precision) in speedups.items() if precision.startswith("bf16")}
    if not picked:
        return []
    return [("`precision: auto`'s bf16 is faster than float32 where it picks it ("
             + ", ".join(f"{arch} {s:.2f}x" for arch, s in picked.items()) + ")", min(picked.values()) >= 1.0)]


def loading_section(loads: dict) -> list[str]:
    """The data-loading table, or nothing where no dataset was measured (`--datasets` with no names)."""
    if not loads:
        return []
    return [
        "## Data loading",
        "",
        "Load, normalise, tokenise and encode, in a fresh process; cold: empty runtime folder (no `datasets` "
        "cache, no encoded cache); warm: the encoded cache hit by the next run.",
        "",
        "| dataset | rows (train / val / test) | cold s | warm s |",
        "|---|---|---|---|",
        *[f"| {name} | {r['train']:,} / {r['val']:,} / {r['test']:,} | {median_spread(cold, 1)} "
          f"| {median_spread(warm, 2)} |" for name, (r, cold, warm) in loads.items()],
        "",
    ]


def target_checks(ratios: dict, to_reference: dict, loads: dict, speedups: dict) -> list[str]:
    recurrent = [a for a in ratios if a in RECURRENT]
    checks = [(f"harness overhead: harness / bare >= 0.95 for every architecture "
               f"(lowest {min(o for o, _ in ratios.values()):.3f})", all(o >= 0.95 for o, _ in ratios.values()))]
    if recurrent:
        checks.append((f"recurrent architectures >= 2x the naive baseline "
                       f"(lowest {min(ratios[a][1] for a in recurrent):.2f}x)",
                       all(ratios[a][1] >= 2 for a in recurrent)))
    checks += [(f"{arch}: tokens/s >= {target}x {REFERENCE}'s, paired ({to_reference[arch]:.2f}x)",
                to_reference[arch] >= target) for arch, target in RATIO_TARGETS.items() if arch in to_reference]
    checks += bf16_checks(speedups)
    if "sentiment140" in loads:
        _, cold, warm = loads["sentiment140"]
        checks.append((f"Sentiment140, all tweets: cold <= 60 s ({statistics.median(cold):.1f} s), "
                       f"warm <= 5 s ({statistics.median(warm):.2f} s)",
                       statistics.median(cold) <= 60 and statistics.median(warm) <= 5))
    return [f"- {'met' if ok else '**missed**'}: {text}" for text, ok in checks]


def training_method(args: argparse.Namespace) -> str:
    """What the training table's columns measure."""
    return (
        "Default hyperparameters: batch 64, lr 0.001, gradient clipping 1.0, each network's own defaults "
        "(`bench/models.py`); data settings of `sweeps/default.yaml`. Tokens are real (non-pad) tokens. "
        "_harness_: the sweep's trial code; _bare_: a plain PyTorch loop over the same network, optimiser and "
        "batches; _naive_: random batches padded to `max_len`, recurrent layers over `pack_padded_sequence`, "
        f"over the first {NAIVE_TEXTS} training texts. A timed pass covers about {args.pass_seconds:g} s of bare "
        "training (sized by a probe pass): the first training texts, or all of them for several epochs "
        "(_texts x epochs_). "
        "_harness / bare_: median (min-max) of the ratio within each repetition, where the two run back to back "
        "(in alternating order), the bare pass in the precision the harness trains in (bf16 table); "
        f"_bare ms / step_: a bare training step ({DEFAULTS['batch_size']} texts); _harness - bare_: the difference "
        "of their pass times per training step. "
        "Inference: batches of 512 over 2,000 test reviews. Peak RSS: of the process that measured the row."
    )


def arithmetic_method(matmul: dict[str, float]) -> str:
    """What the arithmetic table's columns measure."""
    speeds = " and ".join(f"{name}'s {gflops:.0f}" for name, gflops in matmul.items())
    return (
        "_train MFLOP / token_: a training step's floating-point operations (forward, loss, backward) per real token, "
        "counted by PyTorch's FlopCounterMode on one training batch, the same for every architecture (matrix "
        "multiplications only: averaging's embedding means are not counted). _bare GFLOP/s_: that count times the "
        "bare loop's tokens/s; _% of matmul peak_: against this machine's float32 matrix multiply, the faster of "
        f"{speeds} GFLOP/s (a 2048 x 2048 product; bench/kernels.py multiplies with oneDNN's sgemm where the "
        "onednn-cpu-gomp package is installed, MKL's otherwise). _tokens/s / lstm's_: median (min-max) of the ratio "
        "within each repetition, where the architecture's bare pass and a bare lstm pass over the same texts run back "
        "to back (in alternating order). _FLOPs allow_: lstm's FLOPs per token over the architecture's, the ratio "
        "its arithmetic alone would give. _tokens/s / on torch.nn's layers_: against the same bare pass with "
        "torch.nn's SimpleRNN and GRU layers in place of `bench/kernels.py`'s, one pass apart in each repetition "
        "(lstm and bilstm run torch.nn's LSTM, oneDNN's fused kernel, either way)."
    )


def render_report(args: argparse.Namespace, command: str, minutes: float, results: list[dict], loads: dict,
                  matmul: dict[str, float]) -> str:
    table, ratios = training_table(results)
    arithmetic, to_reference = arithmetic_table(results, max(matmul.values()))
    bf16, speedups = bf16_table(results)
    if bf16:
        bf16 = ["## bf16 on this CPU", "", BF16_METHOD, "", *bf16, ""]
    lines = [
        "# Speed benchmark",
        "",
        f"_Generated by `nox -s perf` (`{command}`) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in "
        f"{minutes:.1f} min._",
        "",
        f"- Machine: {machine()}",
        f"- Figures: median of {args.repeats} repetitions for training, {args.load_repeats} for data loading "
        "(min-max in brackets), after one warm-up repetition.",
        "",
        "## Training throughput on IMDB",
        "",
        training_method(args),
        "",
        *table,
        "",
        "## Arithmetic",
        "",
        arithmetic_method(matmul),
        "",
        *arithmetic,
        "",
        *bf16,
        *loading_section(loads),
        "## Targets (this project's 2-core CPU machine)",
        "",
        *target_checks(ratios, to_reference, loads, speedups),
    ]
    return "\n".join(lines) + "\n"
