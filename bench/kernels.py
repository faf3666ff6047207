"""SimpleRNN and GRU layers for the CPU that run as fast as their arithmetic allows: the same parameters and
results as torch.nn.RNN (tanh) and torch.nn.GRU, whose CPU kernels take a slow per-step path (nn.LSTM alone has
oneDNN's fused one). On a GPU, bench keeps cuDNN's layers.

How (docs/performance.md has the figures):
- the input projections of every time step are one matrix multiply before the loop, and the weight gradients one
  after it: only `h @ W_hh` and the gate arithmetic stay in the loop;
- the loops run as TorchScript into preallocated buffers, a few ATen calls a step, and the backward is explicit;
- tanh(a) is computed as 2 sigmoid(2a) - 1, its factors folded into the step's multiply: on these small tensors
  PyTorch's CPU tanh costs several times its sigmoid.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn


def fast_path(rnn: nn.RNNBase, x: Tensor) -> bool:
    """Whether run_layers serves this layer and input: a tanh RNN or a GRU, with biases, batch first, on the CPU."""
    return (x.device.type == "cpu" and rnn.mode in ("RNN_TANH", "GRU") and rnn.bias and rnn.batch_first
            and not rnn.bidirectional and rnn.proj_size == 0)


def run_layers(rnn: nn.RNNBase, x: Tensor) -> Tensor:
    """rnn(x)[0] for a layer that fast_path accepts, from a zero initial state."""
    layer_fn = TanhRNNLayer if rnn.mode == "RNN_TANH" else GRULayer
    out = x.transpose(0, 1)  # time-major: each step's batch is one contiguous block
    for layer in range(rnn.num_layers):
        if layer > 0:  # as nn.RNN: dropout between layers, not after the last
            out = nn.functional.dropout(out, rnn.dropout, rnn.training)
        w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l{layer}")
                                  for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        out = layer_fn.apply(nn.functional.linear(out, w_ih, b_ih), w_hh, b_hh)
    return out.transpose(0, 1)


@functools.cache
def _compiled(fn):
    """The TorchScript version of a loop, or the Python one where TorchScript cannot compile it."""
    try:
        return torch.jit.script(fn)
    except Exception:  # TorchScript is deprecated: the Python loop computes the same
        return fn


def _tanh_rnn_forward(u: Tensor, w_hh_t: Tensor) -> Tensor:
    """s[t + 1] = sigmoid(u[t] + 4 s[t] @ W_hh^T): with h = 2 s - 1 and u = 2 (x W_ih^T + b) - 2 W_hh.sum(1), that is
    h[t + 1] = tanh(x[t] W_ih^T + b + h[t] W_hh^T). s[0] = 1/2, h[0] = 0."""
    s = u.new_empty(u.shape[0] + 1, u.shape[1], u.shape[2])
    s[0].fill_(0.5)
    for t in range(u.shape[0]):
        torch.addmm(u[t], s[t], w_hh_t, alpha=4.0, out=s[t + 1])
        s[t + 1].sigmoid_()
    return s


def _tanh_rnn_backward(grad: Tensor, dtanh: Tensor, w_hh: Tensor) -> Tensor:
    """Gradient of each step's pre-activation, from the outputs' gradient and 1 - h^2."""
    steps = grad.shape[0]
    dpre = torch.empty_like(grad)
    dh = grad[steps - 1].clone()
    for t in range(steps - 1, -1, -1):
        torch.mul(dh, dtanh[t], out=dpre[t])
        if t > 0:
            torch.addmm(grad[t - 1], dpre[t], w_hh, out=dh)
    return dpre


class TanhRNNLayer(torch.autograd.Function):
    """One tanh RNN layer over time-major input projections xw = x W_ih^T + b_ih (T, B, H)."""

    @staticmethod
    def forward(ctx, xw: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        u = (xw + b_hh - w_hh.sum(1)).mul_(2)
        h = _compiled(_tanh_rnn_forward)(u, w_hh.t()).mul_(2).sub_(1)
        h[0].zero_()
        ctx.save_for_backward(h, w_hh)
        return h[1:]

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w_hh = ctx.saved_tensors
        dpre = _compiled(_tanh_rnn_backward)(grad.contiguous(), 1 - h[1:] * h[1:], w_hh)
        return dpre, *_recurrent_weight_grads(dpre, h[:-1])


def _recurrent_weight_grads(dgates: Tensor, h_prev: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of W_hh and b_hh from every step's gate gradients and the state before the step: one multiply
    after the loop rather than one per step."""
    flat = dgates.reshape(-1, dgates.shape[-1])
    return flat.t() @ h_prev.reshape(-1, h_prev.shape[-1]), flat.sum(0)


def _gru_forward(xw: Tensor, xn2: Tensor, w_hh_t: Tensor, b_hh: Tensor):
    """The GRU's steps from h[0] = 0: gh = h W_hh^T + b_hh; r, z = sigmoid(xw_rz + gh_rz);
    n = tanh(xw_n + r gh_n) = 2 sigmoid(xn2 + 2 r gh_n) - 1 with xn2 = 2 xw_n; h' = n + z (h - n)."""
    steps, batch, hidden = xw.shape[0], xw.shape[1], w_hh_t.shape[0]
    h = xw.new_zeros(steps + 1, batch, hidden)
    gh = torch.empty_like(xw)
    rz = xw.new_empty(steps, batch, 2 * hidden)
    n = xw.new_empty(steps, batch, hidden)
    for t in range(steps):
        torch.addmm(b_hh, h[t], w_hh_t, out=gh[t])
        torch.add(xw[t, :, : 2 * hidden], gh[t, :, : 2 * hidden], out=rz[t])
        rz[t].sigmoid_()
        torch.addcmul(xn2[t], rz[t, :, :hidden], gh[t, :, 2 * hidden :], value=2.0, out=n[t])
        n[t].sigmoid_().mul_(2.0).sub_(1.0)
        torch.lerp(n[t], h[t], rz[t, :, hidden:], out=h[t + 1])
    return h, gh, rz, n


def _gru_backward(grad: Tensor, a: Tensor, bz: Tensor, c: Tensor, r: Tensor, z: Tensor, w_hh: Tensor):
    """Gradients of the gates' pre-activations, with the step-independent factors a = (1 - z)(1 - n^2),
    bz = (h_prev - n) z (1 - z) and c = gh_n r (1 - r) computed before the loop. Returns (d[r, z, gh_n], d n_pre)."""
    steps, batch, hidden = grad.shape[0], grad.shape[1], grad.shape[2]
    dgates = grad.new_empty(steps, batch, 3 * hidden)
    dn = torch.empty_like(grad)
    dh = grad[steps - 1].clone()
    for t in range(steps - 1, -1, -1):
        torch.mul(dh, a[t], out=dn[t])
        torch.mul(dn[t], c[t], out=dgates[t, :, :hidden])
        torch.mul(dh, bz[t], out=dgates[t, :, hidden : 2 * hidden])
        torch.mul(dn[t], r[t], out=dgates[t, :, 2 * hidden :])
        if t > 0:
            dh = torch.addcmul(grad[t - 1], dh, z[t]).addmm_(dgates[t], w_hh)
    return dgates, dn


class GRULayer(torch.autograd.Function):
    """One GRU layer over time-major input projections xw = x W_ih^T + b_ih (T, B, 3H), gates in order r, z, n."""

    @staticmethod
    def forward(ctx, xw: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        hidden = w_hh.shape[1]
        h, gh, rz, n = _compiled(_gru_forward)(xw, 2 * xw[..., 2 * hidden :], w_hh.t(), b_hh)
        ctx.save_for_backward(h, gh, rz, n, w_hh)
        return h[1:]

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, gh, rz, n, w_hh = ctx.saved_tensors
        hidden = w_hh.shape[1]
        r, z = rz[..., :hidden], rz[..., hidden:]
        a = (1 - z) * (1 - n * n)
        bz = (h[:-1] - n) * z * (1 - z)
        c = gh[..., 2 * hidden :] * r * (1 - r)
        dgates, dn = _compiled(_gru_backward)(grad.contiguous(), a, bz, c, r.contiguous(), z.contiguous(), w_hh)
        dxw = torch.cat([dgates[..., : 2 * hidden], dn], dim=-1)
        return dxw, *_recurrent_weight_grads(dgates, h[:-1])
