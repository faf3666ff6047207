"""Speed benchmark (`nox -s perf`): what the harness adds to the work itself, and what its data path costs.

Training, for each architecture at its default hyperparameters on the same IMDB training texts (a slice, or all
of them for several epochs, about `--pass-seconds` of bare training):
  harness  the sweep's own trial code (`sweep.objective`: Lightning Trainer, MLflow logging, pruning callback),
           timed by the module over the training part of its epochs, as the sweep logs it
  bare     a plain PyTorch loop: the same network, optimiser, clipping and batches
  naive    the textbook baseline: random batches padded to max_len, recurrent layers over pack_padded_sequence
           (over a fixed `NAIVE_TEXTS` texts: it is an order of magnitude slower)
Throughput counts real (non-pad) tokens, so the three are comparable. Each architecture runs in a process of
its own, so that its peak RSS is its own. Data: load, normalise, tokenise and encode each dataset with an
empty runtime folder (cold: no `datasets` cache, no encoded cache) and again (warm), each in a fresh process.
Every figure is the median over `--repeats` repetitions (`--load-repeats` for data) after one warm-up
repetition that is not counted. This host's speed jumps by up to 2x for tens of seconds at a time, so the
harness/bare ratio is taken within each repetition from short back-to-back passes, in alternating order, and
over many repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import torch
from mlflow.tracking import MlflowClient
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench import data as bench_data
from bench import sweep
from bench.config import load_config
from bench.models import ARCHITECTURES, Recurrent, build_network, reverse_within_length
from bench.module import keep_freed_memory

DEFAULT_SWEEP = "sweeps/default.yaml"  # data settings (vocabulary, max_len) and training settings come from it
# The sweep's training defaults, clipped as the default sweep clips; each network takes its constructor defaults.
DEFAULTS = {**sweep.TRAINING_DEFAULTS, "grad_clip": 1.0}
PROBE_TEXTS = 1024  # the pass that sizes the timed passes; the fewest texts a timed pass covers
NAIVE_TEXTS = 256  # the naive baseline is an order of magnitude slower: a fixed slice keeps it affordable


def subset(split: bench_data.Split, n: int) -> bench_data.Split:
    n = min(n, len(split))
    return bench_data.Split(split.ids[: split.offsets[n]], split.offsets[: n + 1], split.labels[:n])


def packed_forward(network: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The naive baseline's recurrent path: pack_padded_sequence, which skips padding step by step."""
    if not isinstance(network, Recurrent):
        return network(ids, lengths)

    def run(rnn, x):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])[0]

    x = network.dropout(network.embedding(ids))
    rows, last = torch.arange(len(ids)), lengths - 1
    if not network.bidirectional:
        return network.head(network.dropout(run(network.rnn, x)[rows, last])).squeeze(-1)
    for i, (fwd, bwd) in enumerate(zip(network.forward_layers, network.backward_layers)):
        if i > 0:
            x = network.dropout(x)
        backward = reverse_within_length(run(bwd, reverse_within_length(x, lengths)), lengths)
        x = torch.cat([run(fwd, x), backward], dim=-1)
    half = x.shape[-1] // 2
    return network.head(network.dropout(torch.cat([x[rows, last, :half], x[:, 0, half:]], -1))).squeeze(-1)


def train_seconds(network, batches, forward, lr: float, grad_clip: float, epochs: int = 1) -> float:
    """Plain PyTorch training over `batches`, `epochs` times, as the harness trains (AdamW fused, clipping)."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.0, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    network.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for ids, lengths, labels in batches:
            optimizer.zero_grad()
            loss = loss_fn(forward(network, ids, lengths), labels.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
            optimizer.step()
    return time.perf_counter() - start


def measure_training(arch: str, pass_seconds: float, repeats: int, workdir: Path) -> dict:
    """Throughput of harness, bare and naive training, latency and peak RSS of one architecture."""
    cfg = load_config(DEFAULT_SWEEP)
    cfg = cfg.model_copy(update={
        "architectures": [arch], "datasets": ["imdb"], "search_space": DEFAULTS, "search_spaces": {},
        "dataset_search_spaces": {}, "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
    })
    full = bench_data.load("imdb", cfg.data_for("imdb"), cfg.seed, cfg.data_dir, log=lambda message: None)
    max_len = cfg.data_for("imdb").max_len

    def fresh_network() -> torch.nn.Module:
        torch.manual_seed(cfg.seed)
        return build_network(arch, full.vocab_size)

    def bare(train: bench_data.Split, epochs: int = 1) -> float:
        batches = bench_data.loader(train, DEFAULTS["batch_size"], shuffle=True, seed=cfg.seed)
        return train_seconds(fresh_network(), batches, lambda net, i, n: net(i, n), DEFAULTS["lr"],
                             DEFAULTS["grad_clip"], epochs)

    # A timed pass covers about `pass_seconds` of bare training: long enough that per-epoch costs (the first
    # batch) are small, short enough that this host's speed seldom jumps within a pair of passes. Sized by a
    # probe pass, which also warms up: the first training texts, or all of them for as many epochs as it takes.
    probe = bare(subset(full.train, PROBE_TEXTS))
    wanted = PROBE_TEXTS * pass_seconds / probe
    n_texts = min(len(full.train), max(PROBE_TEXTS, round(wanted)))
    epochs = max(1, round(wanted / n_texts))
    train = subset(full.train, n_texts)
    # Every epoch trains to the end: no early stopping, and a single trial is never pruned.
    cfg = cfg.model_copy(update={"study": cfg.study.model_copy(update={"max_epochs": epochs, "patience": epochs})})
    data = bench_data.EncodedDataset("imdb", full.tokenizer, train, subset(full.val, 256),
                                     subset(full.test, 2000), full.stats)

    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = MlflowClient(cfg.tracking_uri)
    experiment_id = sweep.experiment(client, cfg, cfg.tracking_uri)
    parent = client.create_run(experiment_id, run_name=f"perf-{arch}").info.run_id
    ctx = sweep.StudyContext(cfg, "imdb", arch, data, client, experiment_id, parent, workdir / "models")

    def harness() -> float:
        study = optuna.create_study(direction="maximize", pruner=sweep.make_pruner(cfg, "imdb"))
        study.optimize(lambda trial: sweep.objective(trial, ctx), n_trials=1)
        run_id = study.trials[0].user_attrs["mlflow_run_id"]
        return sum(m.value for m in client.get_metric_history(run_id, "train/epoch_time_s"))

    naive_train = subset(full.train, NAIVE_TEXTS)

    def naive() -> float:
        order = np.random.default_rng(cfg.seed).permutation(len(naive_train))
        rows = np.array_split(order, range(DEFAULTS["batch_size"], len(order), DEFAULTS["batch_size"]))
        padded = bench_data.Batches(naive_train, pad_to=max_len)
        return train_seconds(fresh_network(), (padded[r] for r in rows), packed_forward, DEFAULTS["lr"],
                             DEFAULTS["grad_clip"])

    def latency() -> float:
        test_loader = bench_data.loader(data.test, 512, shuffle=False)
        return sweep.inference_ms_per_1k(fresh_network(), test_loader, len(data.test))

    seconds = {"harness": [], "bare": [], "naive": [], "latency": []}
    for rep in range(repeats + 1):
        runs = [("harness", harness), ("bare", lambda: bare(train, epochs))]
        if rep % 2 == 0:
            runs.reverse()  # alternating order: neither of the pair always runs first
        values = {name: run() for name, run in runs + [("naive", naive), ("latency", latency)]}
        if rep > 0:  # the first repetition warms up and is not counted
            for name, value in values.items():
                seconds[name].append(value)
        print(f"  {arch} ({n_texts:,} texts x {epochs} epochs) repetition {rep}/{repeats}"
              f"{' (warm-up)' if rep == 0 else ''}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()),
              file=sys.stderr, flush=True)
    return {
        "arch": arch, "texts": len(train), "epochs": epochs, "tokens": int(train.lengths.sum()) * epochs,
        "steps": len(bench_data.loader(train, DEFAULTS["batch_size"], shuffle=True, seed=cfg.seed)) * epochs,
        "naive_tokens": int(naive_train.lengths.sum()), "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in fresh_network().parameters()),
    }


def measure_load(dataset: str) -> dict:
    """Seconds to load, normalise, tokenise and encode a dataset, in this process (cold or warm cache)."""
    cfg = load_config(DEFAULT_SWEEP)
    settings = cfg.data_for(dataset)
    if dataset == "sentiment140":
        settings = settings.model_copy(update={"train_size": None})  # all 1.6M tweets
    start = time.perf_counter()
    data = bench_data.load(dataset, settings, cfg.seed, cfg.data_dir, log=lambda message: None)
    return {"seconds": time.perf_counter() - start, "rows": data.stats["rows"]}


def child(args: list[str], env: dict | None = None) -> dict:
    """Run this module in a fresh process and return the JSON it prints last."""
    out = subprocess.run([sys.executable, "-m", "bench.perf", *args], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_spread(values: list[float], digits: int = 0) -> str:
    spread = f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})" if len(values) > 1 else ""
    return f"{statistics.median(values):,.{digits}f}{spread}"


def machine() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"{sweep.cpu_model()}, {os.cpu_count()} cores, GPU: {gpu}; device measured: {sweep.device_description()}; "
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
        # Harness and bare run back to back in each repetition: their ratio is taken per repetition, which
        # cancels the drift of this host's speed between repetitions.
        paired = [h / b for h, b in zip(tok["harness"], tok["bare"])]
        bare_step_ms = [b / r["steps"] * 1e3 for b in s["bare"]]
        step_ms = [(h - b) / r["steps"] * 1e3 for h, b in zip(s["harness"], s["bare"])]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15,
                        help="measured training repetitions after the warm-up one")
    parser.add_argument("--load-repeats", type=int, default=3,
                        help="measured data-loading repetitions after the warm-up one")
    parser.add_argument("--pass-seconds", type=float, default=1.0,
                        help="size each timed training pass to about this many seconds of bare training")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--datasets", nargs="*", default=list(bench_data.DATASETS),
                        choices=list(bench_data.DATASETS))
    parser.add_argument("--out", default="reports/perf/README.md", help="where the markdown report goes")
    parser.add_argument("--child-train", help=argparse.SUPPRESS)
    parser.add_argument("--child-load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the sweep does

    if args.child_train:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure_training(args.child_train, args.pass_seconds, args.repeats, Path(tmp))))
        return 0
    if args.child_load:
        print(json.dumps(measure_load(args.child_load)))
        return 0

    started = time.perf_counter()
    loads = {}
    for dataset in args.datasets:
        cold, warm, rows = [], [], None
        for rep in range(args.load_repeats + 1):
            with tempfile.TemporaryDirectory() as home:  # an empty runtime folder: nothing cached
                first = child(["--child-load", dataset], {"BENCH_HOME": home})
                second = child(["--child-load", dataset], {"BENCH_HOME": home})
            rows = first["rows"]
            if rep > 0:
                cold.append(first["seconds"])
                warm.append(second["seconds"])
            print(f"  {dataset} repetition {rep}/{args.load_repeats}: cold {first['seconds']:.1f} s, "
                  f"warm {second['seconds']:.2f} s", file=sys.stderr, flush=True)
        loads[dataset] = (rows, cold, warm)
    measure_load("imdb")  # fills the runtime folder's cache that the training processes read; not timed
    results = [child(["--child-train", arch, "--pass-seconds", str(args.pass_seconds),
                      "--repeats", str(args.repeats)])
               for arch in args.architectures]

    table, ratios = training_table(results)
    command = " ".join(["python -m bench.perf", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Speed benchmark",
        "",
        f"_Generated by `nox -s perf` (`{command}`)"
        f" on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {(time.perf_counter() - started) / 60:.1f} "
        "min._",
        "",
        f"- Machine: {machine()}",
        f"- Figures: median of {args.repeats} repetitions for training, {args.load_repeats} for data loading "
        "(min-max in brackets), after one warm-up repetition.",
        "",
        "## Training throughput on IMDB",
        "",
        "Default hyperparameters: batch 64, lr 0.001, gradient clipping 1.0, each network's own defaults "
        "(`bench/models.py`); data settings of `sweeps/default.yaml`. Tokens are real (non-pad) tokens. "
        "_harness_: the sweep's trial code; _bare_: a plain PyTorch loop over the same network, optimiser and "
        "batches; _naive_: random batches padded to `max_len`, recurrent layers over `pack_padded_sequence`, "
        f"over the first {NAIVE_TEXTS} training texts. A timed pass covers about {args.pass_seconds:g} s of bare "
        "training (sized by a probe pass): the first training texts, or all of them for several epochs "
        "(_texts x epochs_). "
        "_harness / bare_: median (min-max) of the ratio within each repetition, where the two run back to back "
        "(in alternating order); "
        f"_bare ms / step_: a bare training step ({DEFAULTS['batch_size']} texts); _harness - bare_: the difference "
        "of their pass times per training step. "
        "Inference: batches of 512 over 2,000 test reviews. Peak RSS: of the process that measured the row.",
        "",
        *table,
        "",
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
        "## Targets (this project's 2-core CPU machine)",
        "",
    ]
    recurrent = [a for a in ratios if a in ("simple_rnn", "gru", "lstm", "bilstm")]
    checks = [(f"harness overhead: harness / bare >= 0.95 for every architecture "
               f"(lowest {min(o for o, _ in ratios.values()):.3f})", all(o >= 0.95 for o, _ in ratios.values()))]
    if recurrent:
        checks.append((f"recurrent architectures >= 2x the naive baseline "
                       f"(lowest {min(ratios[a][1] for a in recurrent):.2f}x)",
                       all(ratios[a][1] >= 2 for a in recurrent)))
    if "sentiment140" in loads:
        _, cold, warm = loads["sentiment140"]
        checks.append((f"Sentiment140, all tweets: cold <= 60 s ({statistics.median(cold):.1f} s), "
                       f"warm <= 5 s ({statistics.median(warm):.2f} s)",
                       statistics.median(cold) <= 60 and statistics.median(warm) <= 5))
    lines += [f"- {'met' if ok else '**missed**'}: {text}" for text, ok in checks]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
