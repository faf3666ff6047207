"""The precision a run trains in: what the config says, or for `auto` bf16 where it pays (docs/performance.md,
"bf16 on the CPU"), float32 elsewhere."""

from __future__ import annotations

import torch

from bench.config import SweepConfig
from bench.provenance import cpu_features

# On the CPU, autocast runs in bf16 only the products of nn.LSTM (oneDNN's kernel) and of nn.Linear: the networks
# whose time is in the LSTM. kernels.py's SimpleRNN and GRU loops stay float32, and averaging is memory-bound.
BF16_ARCHITECTURES = ("lstm", "bilstm")
# A CPU with any of these (as /proc/cpuinfo names them) runs bf16 products in hardware, and there lstm's pay on both
# CPU kinds measured (AMX on an Intel Xeon, AVX512-BF16 alone on an AMD EPYC: docs/performance.md).
BF16_ENGINES = ("amx_bf16", "avx512_bf16")


def cpu_has_any(features: tuple[str, ...]) -> bool:
    return any(feature in cpu_features().split() for feature in features)


def training_precision(cfg: SweepConfig, arch: str) -> str:
    """Lightning's precision for `arch`: the config's, or for `auto` bf16-mixed on a GPU that supports it and on a
    CPU with a bf16 engine for BF16_ARCHITECTURES, else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_any(BF16_ENGINES) and arch in BF16_ARCHITECTURES else "32-true"
