"""Process-wide setup: subnormal floats are flushed wherever bench trains or predicts."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Run in a fresh interpreter: the setting is per process (and inherited by torch's threads), so the test process
# must not carry it from elsewhere. A subnormal times one stays subnormal unless it is flushed; the product is
# taken once on this thread and once across torch's worker threads (a tensor large enough to be split).
CHECK = """
import sys, torch
from unittest import mock
torch.set_num_threads(2)
def flushed(*args, **kwargs):
    small = torch.full((4,), 1e-39) * 1.0
    large = torch.full((4_000_000,), 1e-39) * 1.0
    print("flushed" if (small == 0).all() and (large == 0).all() else "not flushed")
{body}
"""

ENTRY_POINTS = {
    "sweep worker": """
from bench import cli
with mock.patch("bench.sweep.run_sweep", flushed), mock.patch.object(cli, "build_kernels"):
    cli.main(["worker", "sweeps/smoke.yaml"])
""",
    "probes": """
from bench import cli
with mock.patch("bench.probes.run_probes", flushed), mock.patch("bench.report.write_report"):
    cli.main(["probe", "sweeps/smoke.yaml"])
""",
    "perf": """
from bench import perf
with mock.patch.object(perf, "matmul_gflops", side_effect=SystemExit), mock.patch.object(perf.kernels, "compiled_ops"):
    try:
        perf.main([])
    except SystemExit:
        flushed()
""",
    "served model": """
from bench import serving
with mock.patch.object(serving, "load_checkpoint", return_value=(None, None, {"class_names": []})):
    serving.RawTextModel().load_context(type("Context", (), {"artifacts": {"checkpoint": "x"}}))
flushed()
""",
}


def run_check(body: str) -> str:
    result = subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_the_check_sees_subnormals_when_nothing_flushes_them():
    assert run_check("flushed()") == "not flushed"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_subnormals_are_flushed_where_bench_trains_or_predicts(entry_point):
    assert run_check(ENTRY_POINTS[entry_point]) == "flushed"
