"""Recurrent layers for the CPU that run as fast as their arithmetic allows: the same parameters, outputs and gradients
as torch.nn.RNN (tanh), torch.nn.GRU and torch.nn.LSTM, whose CPU kernels take a slow per-step path (RNN, GRU) or
leave speed unused (LSTM). On a GPU bench keeps cuDNN's layers.

How (docs/performance.md has the figures):
- the input projections of every time step are one matrix multiply before the loop, the weight gradients one after
  it: only `h @ W_hh` and the gate arithmetic stay in the loop;
- the loops are C++ (kernels.cpp), built on first use by torch.utils.cpp_extension into torch's extension cache;
- a layer that reads each text backwards does so in place, from its last real token: no reversed copies.
Where the C++ cannot be built (no compiler), torch.nn's layers run instead: the same results, slower.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

SOURCE = Path(__file__).with_name("kernels.cpp")
# -march=native: the extension is built on the machine that runs it; -ffast-math lets the compiler vectorise exp.
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]


@functools.cache
def compiled_ops():
    """torch.ops.bench_kernels, built once per source and torch version, or None where it cannot be built."""
    try:
        library = _built_library()
    except Exception as err:  # no compiler, no ninja, a failed build: torch.nn's layers compute the same
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        logging.getLogger(__name__).warning("bench: the C++ recurrent kernels could not be built (%s); the CPU runs "
                                            "torch.nn's recurrent layers instead, slower", reason)
        return None
    torch.ops.load_library(str(library))
    return torch.ops.bench_kernels


def _built_library() -> Path:
    """The shared library, built into a folder of its own and moved into the cache in one rename, so that processes
    building at once (a sweep's workers) never wait on each other nor see half a file."""
    from torch.utils import cpp_extension

    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([torch.__version__, *CFLAGS]).encode()).hexdigest()[:16]
    root = Path(cpp_extension.get_default_build_root())
    library = root / f"bench_kernels_{key}.so"
    if not library.exists():
        root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="bench_kernels_", dir=root))
        try:
            cpp_extension.load("bench_kernels", [str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
                               build_directory=str(build), is_python_module=False)
            os.replace(build / "bench_kernels.so", library)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return library


def fast_path(rnn: nn.RNNBase, x: Tensor) -> bool:
    """Whether run_layers serves this layer and input: a tanh RNN, GRU or LSTM with biases, batch first, one
    direction, on the CPU, where the kernels are built."""
    return (x.device.type == "cpu" and rnn.mode in LAYERS and rnn.bias and rnn.batch_first
            and not rnn.bidirectional and rnn.proj_size == 0 and compiled_ops() is not None)


def run_layers(rnn: nn.RNNBase, x: Tensor, backwards_lengths: Tensor | None = None) -> Tensor:
    """rnn(x)[0] for a layer that fast_path accepts, from a zero initial state. With backwards_lengths each text is
    read from its last real token back to its first, and each output stays at its token's position: what
    reversing the real tokens, running rnn and reversing its outputs back would give."""
    layer = LAYERS[rnn.mode]
    lengths = None if backwards_lengths is None else backwards_lengths.to("cpu", torch.int64).contiguous()
    out = x.transpose(0, 1)  # time-major: each step's batch is one contiguous block
    for i in range(rnn.num_layers):
        if i > 0:  # as nn.RNN: dropout between layers, not after the last
            out = nn.functional.dropout(out, rnn.dropout, rnn.training)
        w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{name}_l{i}") for name in ("weight_ih", "weight_hh", "bias_ih",
                                                                            "bias_hh"))
        if layer is GRULayer:  # b_hh stays inside the loop: r scales the n gate's part of it
            out = layer.apply(nn.functional.linear(out, w_ih, b_ih), w_hh, b_hh, lengths)
        else:
            out = layer.apply(nn.functional.linear(out, w_ih, b_ih + b_hh), w_hh, lengths)
    return out.transpose(0, 1)


def _recurrent_weight_grad(dgates: Tensor, h_prev: Tensor) -> Tensor:
    """The gradient of W_hh from every step's gate gradients and the state before the step: one multiply after the
    loop rather than one per step."""
    return dgates.reshape(-1, dgates.shape[-1]).t() @ h_prev.reshape(-1, h_prev.shape[-1])


class TanhRNNLayer(torch.autograd.Function):
    """One tanh RNN layer over time-major pre-activations u = x W_ih^T + b_ih + b_hh (T, B, H)."""

    @staticmethod
    def forward(ctx, u: Tensor, w_hh: Tensor, lengths: Tensor | None) -> Tensor:
        h_prev, out = compiled_ops().rnn_forward(u.contiguous(), w_hh.contiguous(), lengths)
        ctx.save_for_backward(h_prev, out, w_hh)
        ctx.lengths = lengths
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h_prev, out, w_hh = ctx.saved_tensors
        du = compiled_ops().rnn_backward(grad.contiguous(), out, w_hh.contiguous(), ctx.lengths)
        return du, _recurrent_weight_grad(du, h_prev), None


class GRULayer(torch.autograd.Function):
    """One GRU layer over time-major input projections xw = x W_ih^T + b_ih (T, B, 3H), gates in order r, z, n."""

    @staticmethod
    def forward(ctx, xw: Tensor, w_hh: Tensor, b_hh: Tensor, lengths: Tensor | None) -> Tensor:
        h_prev, out, rzn, ghn = compiled_ops().gru_forward(xw.contiguous(), w_hh.contiguous(), b_hh.contiguous(),
                                                           lengths)
        ctx.save_for_backward(h_prev, rzn, ghn, w_hh)
        ctx.lengths = lengths
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h_prev, rzn, ghn, w_hh = ctx.saved_tensors
        dgh, dxw = compiled_ops().gru_backward(grad.contiguous(), h_prev, rzn, ghn, w_hh.contiguous(), ctx.lengths)
        return dxw, _recurrent_weight_grad(dgh, h_prev), dgh.sum((0, 1)), None


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer over time-major pre-activations u = x W_ih^T + b_ih + b_hh (T, B, 4H), gates i, f, g, o."""

    @staticmethod
    def forward(ctx, u: Tensor, w_hh: Tensor, lengths: Tensor | None) -> Tensor:
        h_prev, c_prev, out, gates = compiled_ops().lstm_forward(u.contiguous(), w_hh.contiguous(), lengths)
        ctx.save_for_backward(h_prev, c_prev, gates, w_hh)
        ctx.lengths = lengths
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        h_prev, c_prev, gates, w_hh = ctx.saved_tensors
        du = compiled_ops().lstm_backward(grad.contiguous(), c_prev, gates, w_hh.contiguous(), ctx.lengths)
        return du, _recurrent_weight_grad(du, h_prev), None


LAYERS = {"RNN_TANH": TanhRNNLayer, "GRU": GRULayer, "LSTM": LSTMLayer}  # by torch.nn.RNNBase.mode
