"""SimpleRNN and GRU layers for the CPU that run about as close to the machine's limit as nn.LSTM's oneDNN kernel
does: the same parameters, outputs and gradients as torch.nn.RNN (tanh) and torch.nn.GRU, whose CPU kernels take a
slow per-step path. nn.LSTM keeps oneDNN's kernel; on a GPU bench keeps cuDNN's layers.

How (docs/performance.md has the figures):
- the input projections of every time step are one matrix multiply before the loop, the weight gradients one after
  it: only `h @ W_hh` and the gate arithmetic stay in the loop;
- the loops are C++ (kernels.cpp), built on first use by torch.utils.cpp_extension into torch's extension cache;
- the products are oneDNN's sgemm (the onednn-cpu-gomp package) where it is installed: on AMD's CPUs it is far
  faster than the MKL inside torch, which multiplies otherwise (docs/performance.md).
Where the C++ cannot be built (no compiler), torch.nn's layers run instead: the same results, slower.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

SOURCE = Path(__file__).with_name("kernels.cpp")
# -march=native: the extension is built on the machine that runs it; -ffast-math lets the compiler vectorise exp.
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
_use_torch_nn = False  # set by torch_nn_layers()


@contextlib.contextmanager
def torch_nn_layers():
    """Within it the recurrent layers are torch.nn's: for FlopCounterMode, which sees every product of theirs (the
    compiled loops hide their per-step products from it), and for perf's comparison with them."""
    global _use_torch_nn
    before, _use_torch_nn = _use_torch_nn, True
    try:
        yield
    finally:
        _use_torch_nn = before


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

    onednn = _onednn_library()
    cflags, ldflags = CFLAGS, ["-fopenmp"]
    if onednn is not None:
        cflags, ldflags = [*CFLAGS, "-DBENCH_ONEDNN"], [*ldflags, str(onednn), f"-Wl,-rpath,{onednn.parent}"]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([torch.__version__, *cflags, *ldflags, _cpu_flags()]).encode())
    key = key.hexdigest()[:16]
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())  # as torch's
    library = root / f"bench_kernels_{key}.so"
    if not library.exists():
        print(f"bench: building {SOURCE.name} for this machine (once per version), into {root}", file=sys.stderr,
              flush=True)
        root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix="bench_kernels_", dir=root))
        try:
            cpp_extension.load("bench_kernels", [str(SOURCE)], extra_cflags=cflags, extra_ldflags=ldflags,
                               build_directory=str(build), is_python_module=False)
            os.replace(build / "bench_kernels.so", library)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return library


def _onednn_library() -> Path | None:
    """oneDNN's shared library, from the onednn-cpu-gomp package where it is installed (x86-64 Linux)."""
    try:
        files = importlib.metadata.distribution("onednn-cpu-gomp").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(f.locate()).resolve() for f in files if f.name.startswith("libdnnl.so.")]
    return min(found, key=lambda path: len(path.name), default=None)


def _cpu_flags() -> str:
    """What -march=native compiles for: a cache shared by machines of other CPUs (a network home) builds anew."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), platform.machine())
    except OSError:
        return platform.machine()


def fast_path(rnn: nn.RNNBase, x: Tensor) -> bool:
    """Whether run_layers serves this layer and input: a tanh RNN or a GRU with biases, batch first, one direction,
    on the CPU, where the kernels are built."""
    return (x.device.type == "cpu" and rnn.mode in LAYERS and rnn.bias and rnn.batch_first
            and not rnn.bidirectional and not _use_torch_nn and compiled_ops() is not None)


def run_layers(rnn: nn.RNNBase, x: Tensor) -> Tensor:
    """rnn(x)[0] for a layer that fast_path accepts, from a zero initial state."""
    out = x.transpose(0, 1).contiguous()  # time-major: each step's batch is one contiguous block
    for i in range(rnn.num_layers):
        if i > 0:  # as nn.RNN: dropout between layers, not after the last
            out = nn.functional.dropout(out, rnn.dropout, rnn.training)
        weights = (getattr(rnn, f"{name}_l{i}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        out = LAYERS[rnn.mode].apply(out, *weights)
    return out.transpose(0, 1)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    return compiled_ops().mm(a, b)


def _projection(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x W^T + b over every time step at once: (T, B, I) -> (T, B, O)."""
    return _mm(x.reshape(-1, x.shape[-1]), w.t()).add_(b).view(*x.shape[:-1], w.shape[0])


def _input_grad(dy: Tensor, w: Tensor) -> Tensor:
    """dy W: the gradient of x in y = x W^T + b, over every time step at once."""
    return _mm(dy.reshape(-1, dy.shape[-1]), w).view(*dy.shape[:-1], w.shape[1])


def _weight_grad(dy: Tensor, x: Tensor) -> Tensor:
    """dy^T x: the gradient of W in y = x W^T + b, summed over every time step in one product."""
    return _mm(dy.reshape(-1, dy.shape[-1]).t(), x.reshape(-1, x.shape[-1]))


def _bias_grad(dy: Tensor) -> Tensor:
    return dy.sum((0, 1))


class TanhRNNLayer(torch.autograd.Function):
    """One tanh RNN layer over a time-major input (T, B, I): h' = tanh(x W_ih^T + b_ih + b_hh + h W_hh^T)."""

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        x, w_hh = x.contiguous(), w_hh.contiguous()
        h = compiled_ops().rnn_forward(_projection(x, w_ih, b_ih + b_hh), w_hh)
        ctx.save_for_backward(x, h, w_ih, w_hh)
        return h[1:]

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, h, w_ih, w_hh = ctx.saved_tensors
        du = compiled_ops().rnn_backward(grad.contiguous(), h, w_hh)
        db = _bias_grad(du)
        return _input_grad(du, w_ih), _weight_grad(du, x), _weight_grad(du, h[:-1]), db, db


class GRULayer(torch.autograd.Function):
    """One GRU layer over a time-major input (T, B, I), gates in order r, z, n. b_hh stays inside the loop: r scales
    the n gate's part of it."""

    @staticmethod
    def forward(ctx, x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
        x, w_hh = x.contiguous(), w_hh.contiguous()
        h, rzn, ghn = compiled_ops().gru_forward(_projection(x, w_ih, b_ih), w_hh, b_hh.contiguous())
        ctx.save_for_backward(x, h, rzn, ghn, w_ih, w_hh)
        return h[1:]

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, h, rzn, ghn, w_ih, w_hh = ctx.saved_tensors
        dgh, dxw = compiled_ops().gru_backward(grad.contiguous(), h, rzn, ghn, w_hh)
        return (_input_grad(dxw, w_ih), _weight_grad(dxw, x), _weight_grad(dgh, h[:-1]), _bias_grad(dxw),
                _bias_grad(dgh))


LAYERS = {"RNN_TANH": TanhRNNLayer, "GRU": GRULayer}  # by torch.nn.RNNBase.mode
