"""Speed benchmark (`nox -s perf`): what the harness adds to the work itself, and what its data path costs.

Training, for each architecture at its default hyperparameters on the same IMDB training texts (a slice, or all
of them for several epochs, about `--pass-seconds` of bare training):
  harness  the sweep's own trial code (`bench.trial.objective`: Lightning Trainer, MLflow logging, pruning callback),
           timed by the module over the training part of its epochs, as the sweep logs it
  bare     a plain PyTorch loop: the same network, optimiser, clipping and batches
  naive    the textbook baseline: random batches padded to max_len, recurrent layers over pack_padded_sequence
           (over a fixed `NAIVE_TEXTS` texts: it is an order of magnitude slower)
  lstm     a bare lstm pass over the same texts, the reference that every architecture's speed is a ratio to
  torch.nn simple_rnn's and gru's bare pass on torch.nn's recurrent layers rather than bench/kernels.py's
Arithmetic: training FLOPs per token (FlopCounterMode), achieved GFLOP/s, and the machine's matmul speed.
Throughput counts real (non-pad) tokens, so the three are comparable. Each architecture runs in a process of
its own, so that its peak RSS is its own. Data: load, normalise, tokenise and encode each dataset with an
empty runtime folder (cold: no `datasets` cache, no encoded cache) and again (warm), each in a fresh process.
Every figure is the median over `--repeats` repetitions (`--load-repeats` for data) after one warm-up
repetition that is not counted. This host's speed jumps by up to 2x for tens of seconds at a time, so the
harness/bare and lstm/bare ratios are taken within each repetition from short back-to-back passes, in
alternating order, and over many repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench import data as bench_data
from bench import kernels, search, tracking
from bench.config import load_config
from bench.context import StudyContext, SweepContext
from bench.coordination import Keys
from bench.evaluation import inference_ms_per_1k
from bench.models import ARCHITECTURES, Recurrent, build_network
from bench.module import clip_gradients, make_optimizers, training_flops_per_token
from bench.perf_report import DEFAULTS, NAIVE_TEXTS, REFERENCE, render_report
from bench.precision import BF16_ENGINES, cpu_has_any, training_precision
from bench.runtime import flush_denormals, keep_freed_memory, quiet_libraries
from bench.trial import objective

DEFAULT_SWEEP = "sweeps/default.yaml"  # data settings (vocabulary, max_len) and training settings come from it
PROBE_TEXTS = 1024  # the pass that sizes the timed passes; the fewest texts a timed pass covers


def subset(split: bench_data.Split, n: int) -> bench_data.Split:
    n = min(n, len(split))
    return bench_data.Split(split.ids[: split.offsets[n]], split.offsets[: n + 1], split.labels[:n])


def naive_forward(network: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The naive baseline's forward pass: recurrent layers over pack_padded_sequence, which skips padding step by
    step; the other networks as they are."""
    return network(ids, lengths, packed=True) if isinstance(network, Recurrent) else network(ids, lengths)


def plain_forward(network: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return network(ids, lengths)


def bf16_forward(network: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The forward pass as Lightning's bf16-mixed runs it on the CPU: under autocast, the logits back in float32."""
    with torch.autocast("cpu", torch.bfloat16):
        return network(ids, lengths).float()


def train_seconds(network, batches, forward, lr: float, grad_clip: float, epochs: int = 1) -> float:
    """Plain PyTorch training over `batches`, `epochs` times, as the harness trains (AdamW fused, clipping)."""
    optimizers = make_optimizers(network, lr, weight_decay=0.0)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    network.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for ids, lengths, labels in batches:
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss = loss_fn(forward(network, ids, lengths), labels.float())
            loss.backward()
            clip_gradients(list(network.parameters()), grad_clip)
            for optimizer in optimizers:
                optimizer.step()
    return time.perf_counter() - start


class TrainingBench:
    """One architecture at its default hyperparameters on IMDB, and the four things perf times for it."""

    def __init__(self, arch: str, pass_seconds: float, workdir: Path):
        cfg = load_config(DEFAULT_SWEEP).model_copy(update={
            "architectures": [arch], "datasets": ["imdb"], "search_space": DEFAULTS, "search_spaces": {},
            "dataset_search_spaces": {}, "tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
        })
        self.arch, self.cfg = arch, cfg
        self.full = bench_data.load("imdb", cfg.data_for("imdb"), cfg.seed, cfg.data_dir, log=lambda message: None)
        self.train, self.epochs = self._size_passes(pass_seconds)
        self.on_kernels = any(isinstance(m, torch.nn.RNNBase) and m.mode in kernels.LAYERS  # kernels.py serves it
                              for m in self.fresh_network().modules())
        self.naive_train = subset(self.full.train, NAIVE_TEXTS)
        # Every epoch trains to the end: no early stopping, and a single trial is never pruned.
        study = cfg.study.model_copy(update={"max_epochs": self.epochs, "patience": self.epochs})
        self.cfg = cfg = cfg.model_copy(update={"study": study})
        data = bench_data.EncodedDataset("imdb", self.full.tokenizer, self.train, subset(self.full.val, 256),
                                         subset(self.full.test, 2000), self.full.stats)
        mlflow.set_tracking_uri(cfg.tracking_uri)
        self.client = MlflowClient(cfg.tracking_uri)
        experiment_id = tracking.experiment_id_of(self.client, cfg)
        parent = self.client.create_run(experiment_id, run_name=f"perf-{arch}").info.run_id
        sweep = SweepContext(cfg, self.client, experiment_id, Keys("sqlite://"))
        self.ctx = StudyContext(sweep, "imdb", arch, data, parent)
        self.precision = training_precision(cfg, arch)  # what the harness trains in

    def _size_passes(self, pass_seconds: float) -> tuple[bench_data.Split, int]:
        """A timed pass covers about `pass_seconds` of bare training: long enough that per-epoch costs (the first
        batch) are small, short enough that this host's speed seldom jumps within a pair of passes. Sized by a probe
        pass, which also warms up: the first training texts, or all of them for as many epochs as it takes."""
        probe = self.bare(subset(self.full.train, PROBE_TEXTS))
        wanted = PROBE_TEXTS * pass_seconds / probe
        n_texts = min(len(self.full.train), max(PROBE_TEXTS, round(wanted)))
        return subset(self.full.train, n_texts), max(1, round(wanted / n_texts))

    def fresh_network(self, arch: str | None = None) -> torch.nn.Module:
        torch.manual_seed(self.cfg.seed)
        return build_network(arch or self.arch, self.full.vocab_size)

    def bare(self, train: bench_data.Split, epochs: int = 1, arch: str | None = None, bf16: bool = False) -> float:
        batches = bench_data.loader(train, DEFAULTS["batch_size"], shuffle=True, seed=self.cfg.seed)
        return train_seconds(self.fresh_network(arch), batches, bf16_forward if bf16 else plain_forward,
                             DEFAULTS["lr"], DEFAULTS["grad_clip"], epochs)

    def flops_per_token(self) -> float:
        texts = subset(self.full.train, PROBE_TEXTS)  # the same batch for every architecture
        ids, lengths, _ = next(iter(bench_data.loader(texts, DEFAULTS["batch_size"], shuffle=True, seed=self.cfg.seed)))
        return training_flops_per_token(self.fresh_network(), ids, lengths)

    def harness(self) -> float:
        study = optuna.create_study(direction="maximize", pruner=search.make_pruner(self.cfg, "imdb"))
        study.optimize(lambda trial: objective(trial, self.ctx), n_trials=1)
        run_id = study.trials[0].user_attrs["mlflow_run_id"]
        return sum(m.value for m in self.client.get_metric_history(run_id, "train/epoch_time_s"))

    def naive(self) -> float:
        order = np.random.default_rng(self.cfg.seed).permutation(len(self.naive_train))
        rows = np.array_split(order, range(DEFAULTS["batch_size"], len(order), DEFAULTS["batch_size"]))
        padded = bench_data.Batches(self.naive_train, pad_to=self.cfg.data_for("imdb").max_len)
        return train_seconds(self.fresh_network(), (padded[r] for r in rows), naive_forward, DEFAULTS["lr"],
                             DEFAULTS["grad_clip"])

    def latency(self) -> float:
        test = self.ctx.data.test
        return inference_ms_per_1k(self.fresh_network(), bench_data.loader(test, 512, shuffle=False), len(test))

    def bare_on_torch_nn(self) -> float:
        with kernels.torch_nn_layers():
            return self.bare(self.train, self.epochs)

    def repetition(self, rep: int) -> dict[str, float]:
        """Seconds of each measurement. Bare runs back to back with the harness on one side and with a bare lstm
        pass over the same texts on the other, in alternating order, so that neither of a pair always runs first.
        A network with kernels.py's layers also runs a bare pass on torch.nn's, and on a CPU with a bf16 engine
        every network a bare pass under bf16 autocast: next to the harness where the harness trains in bf16."""
        bare = [("bare", lambda: self.bare(self.train, self.epochs))]
        if cpu_has_any(BF16_ENGINES):
            bare.append(("bf16", lambda: self.bare(self.train, self.epochs, bf16=True)))
        if self.precision == "bf16-mixed":  # the harness's neighbour is the bare pass in its own precision
            bare.reverse()
        paired = [("harness", self.harness), *bare]
        if self.arch != REFERENCE:
            paired.append((REFERENCE, lambda: self.bare(self.train, self.epochs, REFERENCE)))
        if self.on_kernels:
            paired.append(("torch_nn", self.bare_on_torch_nn))
        if rep % 2 == 0:
            paired.reverse()
        return {name: run() for name, run in paired + [("naive", self.naive), ("latency", self.latency)]}


def measure_training(arch: str, pass_seconds: float, repeats: int, workdir: Path) -> dict:
    """Throughput of harness, bare and naive training, latency and peak RSS of one architecture."""
    bench = TrainingBench(arch, pass_seconds, workdir)
    seconds = {}
    for rep in range(repeats + 1):
        values = bench.repetition(rep)
        if rep > 0:  # the first repetition warms up and is not counted
            for name, value in values.items():
                seconds.setdefault(name, []).append(value)
        print(f"  {arch} ({len(bench.train):,} texts x {bench.epochs} epochs) repetition {rep}/{repeats}"
              f"{' (warm-up)' if rep == 0 else ''}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()),
              file=sys.stderr, flush=True)
    train, epochs = bench.train, bench.epochs
    steps = len(bench_data.loader(train, DEFAULTS["batch_size"], shuffle=True, seed=bench.cfg.seed)) * epochs
    return {
        "arch": arch, "texts": len(train), "epochs": epochs, "tokens": int(train.lengths.sum()) * epochs,
        "steps": steps, "naive_tokens": int(bench.naive_train.lengths.sum()), "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in bench.fresh_network().parameters()),
        "flops_per_token": bench.flops_per_token(),
        "auto_precision": bench.precision,
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


def matmul_gflops(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """This machine's float32 matrix-multiply speed by each library at hand, torch's (MKL on x86) and
    bench/kernels.py's: the median of `repeats` products of two size x size matrices, after one warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    products = {"torch.mm": torch.mm}
    if kernels.compiled_ops() is not None:
        products["bench/kernels.py"] = kernels.compiled_ops().mm
    speeds = {}
    for name, product in products.items():
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            product(a, b)
            times.append(time.perf_counter() - start)
        speeds[name] = 2 * size**3 / statistics.median(times[1:]) / 1e9
    return speeds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def measure_loads(datasets: list[str], repeats: int) -> dict[str, tuple[dict, list[float], list[float]]]:
    """{dataset: (rows per split, cold seconds, warm seconds)}, each load in a fresh process."""
    loads = {}
    for dataset in datasets:
        cold, warm, rows = [], [], None
        for rep in range(repeats + 1):
            with tempfile.TemporaryDirectory() as home:  # an empty runtime folder: nothing cached
                first = child(["--child-load", dataset], {"BENCH_HOME": home})
                second = child(["--child-load", dataset], {"BENCH_HOME": home})
            rows = first["rows"]
            if rep > 0:
                cold.append(first["seconds"])
                warm.append(second["seconds"])
            print(f"  {dataset} repetition {rep}/{repeats}: cold {first['seconds']:.1f} s, "
                  f"warm {second['seconds']:.2f} s", file=sys.stderr, flush=True)
        loads[dataset] = (rows, cold, warm)
    return loads


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flush_denormals()  # as the sweep does
    keep_freed_memory()
    quiet_libraries()
    kernels.compiled_ops()  # built before any pass is timed
    if args.child_train:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure_training(args.child_train, args.pass_seconds, args.repeats, Path(tmp))))
        return 0
    if args.child_load:
        print(json.dumps(measure_load(args.child_load)))
        return 0

    started = time.perf_counter()
    matmul = matmul_gflops()
    loads = measure_loads(args.datasets, args.load_repeats)
    measure_load("imdb")  # fills the runtime folder's cache that the training processes read; not timed
    results = [child(["--child-train", arch, "--pass-seconds", str(args.pass_seconds),
                      "--repeats", str(args.repeats)])
               for arch in args.architectures]
    command = " ".join(["python -m bench.perf", *(sys.argv[1:] if argv is None else argv)])
    text = render_report(args, command, (time.perf_counter() - started) / 60, results, loads, matmul)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
