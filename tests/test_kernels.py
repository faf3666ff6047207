"""kernels.py's layers compute what torch.nn's do: outputs and gradients in float64, stacked, bidirectional and
padded; and without the compiled kernels the networks still run, on torch.nn's layers."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench import kernels, models
from bench.models import Recurrent

CELLS = {"rnn": (torch.nn.RNN, 1, kernels.TanhRNNLayer), "gru": (torch.nn.GRU, 3, kernels.GRULayer)}


def grads(out, inputs, seed=0):
    torch.manual_seed(seed)
    return torch.autograd.grad(out, inputs, torch.randn_like(out))


def assert_same(got, expected, inputs):
    assert torch.allclose(got, expected, atol=1e-12)
    for a, b in zip(grads(got, inputs), grads(expected, inputs)):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_layers_match_torch_nn(cell, num_layers):
    torch.manual_seed(0)
    rnn = CELLS[cell][0](5, 4, num_layers=num_layers, batch_first=True).double()
    x = torch.randn(3, 9, 5, dtype=torch.double, requires_grad=True)
    assert kernels.fast_path(rnn, x)
    assert_same(kernels.run_layers(rnn, x), rnn(x)[0], [x, *rnn.parameters()])


@pytest.mark.parametrize("cell", CELLS)
def test_explicit_backward_passes_gradcheck(cell):
    torch.manual_seed(0)
    _, gates, layer = CELLS[cell]
    x = torch.randn(6, 3, 2, dtype=torch.double, requires_grad=True)
    w_ih, w_hh = ((0.5 * torch.randn(3 * gates, n, dtype=torch.double)).requires_grad_() for n in (2, 3))
    b_ih, b_hh = (torch.randn(3 * gates, dtype=torch.double, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(layer.apply, (x, w_ih, w_hh, b_ih, b_hh))


@pytest.mark.parametrize("cell", [*CELLS, "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_networks_match_with_torch_nn_layers_and_padding(cell, bidirectional, monkeypatch):
    torch.manual_seed(0)
    net = Recurrent(30, cell, bidirectional, embed_dim=6, hidden_size=5, num_layers=2).double().eval()
    lengths = torch.tensor([7, 1, 4])
    ids = torch.randint(2, 30, (3, 9)) * (torch.arange(9) < lengths[:, None])
    fast = net(ids, lengths)
    assert torch.allclose(net(ids[:1, :7], lengths[:1]), fast[:1], atol=1e-12)  # padding changes nothing
    assert torch.allclose(net(ids, lengths, packed=True), fast, atol=1e-12)  # as over pack_padded_sequence
    assert_like_on_torch_nn(net, ids, lengths, monkeypatch, atol=1e-12)


def assert_like_on_torch_nn(net, ids, lengths, monkeypatch, atol, grad_atol=None):
    """The network's outputs and parameter gradients equal those it gives on torch.nn's layers."""
    params = list(net.parameters())
    fast = net(ids, lengths)
    fast_grads = grads(fast, params)
    monkeypatch.setattr(models, "fast_path", lambda rnn, x: False)
    slow = net(ids, lengths)
    assert torch.allclose(fast, slow, atol=atol)
    for a, b in zip(fast_grads, grads(slow, params)):
        assert torch.allclose(a, b, atol=grad_atol or atol)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_on_several_threads_agrees_with_torch_nn(cell, monkeypatch):
    torch.manual_seed(0)
    net = Recurrent(50, cell, embed_dim=16, hidden_size=64)
    ids, lengths = torch.randint(1, 50, (64, 40)), torch.randint(1, 41, (64,))  # 64 rows: every thread has a share
    assert_like_on_torch_nn(net, ids, lengths, monkeypatch, atol=1e-5, grad_atol=1e-4)


def test_without_the_compiled_kernels_the_networks_run_on_torch_nn(monkeypatch):
    torch.manual_seed(0)
    net = Recurrent(30, "gru", embed_dim=6, hidden_size=5).double()
    ids, lengths = torch.randint(1, 30, (4, 8)), torch.tensor([8, 3, 5, 1])
    fast = net(ids, lengths)
    x = torch.zeros(1, 1, 6, dtype=torch.double)
    with kernels.torch_nn_layers():  # as FlopCounterMode and perf use it
        assert not kernels.fast_path(net.rnn, x)
    monkeypatch.setattr(kernels, "compiled_ops", lambda: None)
    assert not kernels.fast_path(net.rnn, x)
    assert torch.allclose(net(ids, lengths), fast, atol=1e-12)


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    kernels.compiled_ops.cache_clear()
    monkeypatch.setattr(kernels, "_built_library", lambda: (_ for _ in ()).throw(RuntimeError("no compiler: c++")))
    try:
        assert kernels.compiled_ops() is None
        assert "no compiler: c++" in caplog.text and "torch.nn" in caplog.text
    finally:
        kernels.compiled_ops.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_gates_stay_finite(dtype):
    """Pre-activations far beyond the gates' range (exploding weights) saturate them, as torch.nn does, not NaN."""
    extremes = torch.tensor([-1e4, -100.0, -50.0, -10.0, 0.0, 10.0, 50.0, 100.0, 1e4], dtype=dtype)
    for cell in CELLS.values():
        rnn = cell[0](1, 9, batch_first=True).to(dtype)
        with torch.no_grad():
            for name, p in rnn.named_parameters():
                p.zero_()
                if name == "bias_ih_l0":
                    p.copy_(extremes.repeat(cell[1]))
        x = torch.zeros(16, 3, 1, dtype=dtype)  # 16 rows: a share for each thread
        assert torch.allclose(kernels.run_layers(rnn, x), rnn(x)[0], atol=1e-6)


def test_products_are_onednns_where_its_package_is_installed():
    if kernels._onednn_library() is None:
        pytest.skip("the onednn-cpu-gomp package is not installed here: kernels.py multiplies with MKL")
    assert kernels.compiled_ops() is not None
    assert "libdnnl.so" in Path("/proc/self/maps").read_text()


@pytest.mark.slow
def test_without_onednn_the_kernels_multiply_with_mkl_and_agree(tmp_path):
    """Built without oneDNN (its package missing) the layers still compute what torch.nn's do. In a process of its
    own: a second build of the kernels cannot be loaded beside the first."""
    check = textwrap.dedent("""
        import torch
        from bench import kernels
        kernels._onednn_library = lambda: None
        torch.manual_seed(0)
        x = torch.randn(64, 20, 8)  # 64 rows: every thread has a share
        for rnn in (torch.nn.RNN(8, 16, 2, batch_first=True), torch.nn.GRU(8, 16, 2, batch_first=True)):
            assert kernels.fast_path(rnn, x)
            assert torch.allclose(kernels.run_layers(rnn, x), rnn(x)[0], atol=1e-5)
        assert "libdnnl.so" not in open("/proc/self/maps").read()
    """)
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", check], env=env, check=True, timeout=600)
