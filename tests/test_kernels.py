"""kernels.py's SimpleRNN and GRU layers compute what torch.nn's do: outputs and gradients in float64, compiled or
not, stacked, bidirectional and padded."""

import pytest
import torch

from bench import kernels, models
from bench.models import Recurrent


@pytest.fixture(params=["compiled", "python"])
def loops(request, monkeypatch):
    """Both ways the loops run: TorchScript, and the plain Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(kernels, "_compiled", lambda fn: fn)


def grads(out, inputs, seed=0):
    torch.manual_seed(seed)
    return torch.autograd.grad(out, inputs, torch.randn_like(out))


@pytest.mark.parametrize("cell", [torch.nn.RNN, torch.nn.GRU])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_layers_match_torch_nn(loops, cell, num_layers):
    torch.manual_seed(0)
    rnn = cell(5, 4, num_layers=num_layers, batch_first=True).double()
    x = torch.randn(3, 9, 5, dtype=torch.double, requires_grad=True)
    assert kernels.fast_path(rnn, x)
    expected, got = rnn(x)[0], kernels.run_layers(rnn, x)
    assert torch.allclose(got, expected, atol=1e-12)
    inputs = [x, *rnn.parameters()]
    for a, b in zip(grads(got, inputs), grads(expected, inputs)):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("layer, gates", [(kernels.TanhRNNLayer, 1), (kernels.GRULayer, 3)])
def test_explicit_backward_passes_gradcheck(loops, layer, gates):
    torch.manual_seed(0)
    xw = torch.randn(6, 2, 3 * gates, dtype=torch.double, requires_grad=True)
    w_hh = (0.5 * torch.randn(3 * gates, 3, dtype=torch.double)).requires_grad_()
    b_hh = torch.randn(3 * gates, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(layer.apply, (xw, w_hh, b_hh))


@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_networks_match_with_torch_nn_layers_and_padding(cell, bidirectional, monkeypatch):
    torch.manual_seed(0)
    net = Recurrent(30, cell, bidirectional, embed_dim=6, hidden_size=5, num_layers=2).double().eval()
    lengths = torch.tensor([7, 1, 4])
    ids = torch.randint(2, 30, (3, 9)) * (torch.arange(9) < lengths[:, None])
    fast = net(ids, lengths)
    fast_grads = grads(fast, list(net.parameters()))
    assert torch.allclose(net(ids[:1, :7], lengths[:1]), fast[:1], atol=1e-12)  # padding changes nothing
    monkeypatch.setattr(models, "fast_path", lambda rnn, x: False)
    slow = net(ids, lengths)
    assert torch.allclose(fast, slow, atol=1e-12)
    for a, b in zip(fast_grads, grads(slow, list(net.parameters()))):
        assert torch.allclose(a, b, atol=1e-12)
