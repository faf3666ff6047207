"""The speed benchmark measures what it says: the naive baseline computes the same function, and the harness
measurement runs the sweep's real trial code."""

import numpy as np
import pytest
import torch

from bench import data as bench_data
from bench import perf, perf_report
from bench.models import RECURRENT, build_network
from bench.module import training_flops_per_token


@pytest.mark.parametrize("arch", RECURRENT)
def test_naive_packed_path_computes_the_same_predictions(arch):
    torch.manual_seed(0)
    net = build_network(arch, 30, embed_dim=8, hidden_size=8, num_layers=2).eval()
    lengths = torch.tensor([5, 1, 3])
    ids = torch.randint(2, 30, (3, 9)) * (torch.arange(9) < lengths[:, None])  # padded to 9, like max_len
    assert torch.allclose(perf.naive_forward(net, ids, lengths), net(ids, lengths), atol=1e-5)


def test_batches_padded_to_a_fixed_width():
    split = bench_data.Split(np.array([4, 5, 6, 7, 8], dtype=np.int32), np.array([0, 2, 5]), np.array([0, 1]))
    ids, lengths, labels = bench_data.Batches(split, pad_to=6)[np.array([1, 0])]
    assert ids.tolist() == [[6, 7, 8, 0, 0, 0], [4, 5, 0, 0, 0, 0]]
    assert lengths.tolist() == [3, 2] and labels.tolist() == [1, 0]


def test_training_measurement_runs_the_sweep_trial(runtime, mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(mirror))
    monkeypatch.setattr(perf, "cpu_has_any", lambda features: True)  # as on a CPU with AVX512-BF16 or AMX
    result = perf.measure_training("averaging", pass_seconds=0.01, repeats=2, workdir=tmp_path / "perf")
    assert result["texts"] >= 64 and result["tokens"] > result["texts"]
    assert all(len(values) == 2 and min(values) > 0 for values in result["seconds"].values())
    assert "lstm" in result["seconds"] and result["flops_per_token"] > 0  # paired with lstm, and counted
    table, ratios = perf_report.training_table([result])
    assert table[2].startswith("| `averaging` |") and ratios["averaging"][0] > 0
    arithmetic, to_lstm = perf_report.arithmetic_table([result], peak_gflops=100.0)
    assert arithmetic[2].startswith("| `averaging` |") and to_lstm["averaging"] > 0
    bf16, speedups = perf_report.bf16_table([result])
    assert bf16[2].endswith(f"| {result['auto_precision']} |") and speedups["averaging"][0] > 0


def test_the_harness_is_set_against_the_bare_pass_in_its_own_precision():
    seconds = {"harness": [2.0], "bare": [4.0], "bf16": [2.0], "naive": [8.0], "latency": [1.0]}
    result = {"arch": "lstm", "texts": 10, "epochs": 1, "tokens": 100, "steps": 1, "naive_tokens": 100,
              "params": 1, "peak_rss_mb": 1.0, "seconds": seconds}
    _, fp32 = perf_report.training_table([{**result, "auto_precision": "32-true"}])
    _, bf16 = perf_report.training_table([{**result, "auto_precision": "bf16-mixed"}])
    assert fp32["lstm"][0] == 2.0 and bf16["lstm"][0] == 1.0  # harness / bare, of tokens/s


def test_the_bf16_check_holds_auto_to_a_speedup_only_where_it_picks_bf16():
    [(_, ok)] = perf_report.bf16_checks({"lstm": (1.3, "bf16-mixed"), "gru": (0.8, "32-true")})
    assert ok
    [(text, ok)] = perf_report.bf16_checks({"lstm": (0.9, "bf16-mixed")})
    assert not ok and "lstm 0.90x" in text
    assert perf_report.bf16_checks({"gru": (0.8, "32-true")}) == []  # auto picks float32: nothing to hold it to


def test_training_flops_are_counted_and_scale_with_the_gates():
    ids, lengths = torch.randint(2, 50, (4, 30)), torch.tensor([30, 20, 10, 5])
    flops = {arch: training_flops_per_token(build_network(arch, 50), ids, lengths) for arch in RECURRENT}
    # Recurrent products dominate: lstm has 4 gates, gru 3, simple_rnn 1; bilstm twice lstm.
    assert 3.3 < flops["lstm"] / flops["simple_rnn"] < 4.2 and 2.5 < flops["gru"] / flops["simple_rnn"] < 3.2
    assert 1.9 < flops["bilstm"] / flops["lstm"] < 2.1
