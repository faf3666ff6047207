"""Bad input, a killed sweep, a second process: each one command, its exit code and a one-line message, never a
traceback."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench import preflight, search, sweep
from bench import trial as bench_trial
from bench.cli import main
from bench.config import load_config
from bench.models import BUILT_IN
from bench.runtime import storage_url, tracking_uri
from bench.serving import raw_texts_of
from bench.ui import runs_pages

ROOT = Path(__file__).parents[1]
SHIPPED = sorted((ROOT / "sweeps").rglob("*.yaml"))


def run(args, capsys):
    """Exit code, standard output and the standard error of `python -m bench ARGS`, which has no traceback."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_sweep_takes_any_single_architecture_or_dataset(config, mirror, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(mirror))  # imdb-stars.yaml reads its files from the mirror
    datasets = load_config(config).datasets
    for arch in BUILT_IN:
        assert load_config(config, [f"architectures=[{arch}]"]).architectures == [arch]
    for dataset in datasets:
        assert load_config(config, [f"datasets=[{dataset}]"]).datasets == [dataset]
    preflight.check_networks_build(load_config(config), config)  # no value of its search spaces is refused


def test_null_text_names_the_file_and_rows(runtime, tiny_sweep, mirror, capsys):
    path = mirror / "imdb" / "train.parquet"
    frame = pd.read_parquet(path)
    frame.loc[[3, 7], "text"] = None
    frame.to_parquet(path)
    code, _, err = run(["sweep", tiny_sweep], capsys)
    line = one_error_line(err)
    assert code == 2 and "imdb/train.parquet" in line and "'text' is empty (null) in 2 row(s)" in line


def test_empty_split_is_named(runtime, tiny_sweep, mirror, capsys):
    path = mirror / "imdb" / "test.parquet"
    pd.read_parquet(path).iloc[:0].to_parquet(path)
    code, _, err = run(["sweep", tiny_sweep], capsys)
    assert code == 2 and "imdb/test.parquet: no rows" in one_error_line(err)


def test_inverted_range_says_only_what_is_wrong(runtime, tiny_sweep, capsys):
    code, _, err = run(["sweep", tiny_sweep, "search_space.lr={type: float, low: 0.1, high: 0.001}"], capsys)
    line = one_error_line(err)
    assert code == 2 and "search_space.lr: empty or inverted range: low=0.1 must be below high=0.001" in line


def test_a_value_the_network_refuses_is_an_error_before_any_data_loads(runtime, tiny_sweep, capsys):
    code, out, err = run(["sweep", tiny_sweep, "architectures=[lstm]", "search_spaces.lstm.hidden_size=0"], capsys)
    line = one_error_line(err)
    assert code == 2 and "search_spaces.lstm.hidden_size: lstm refuses 0" in line and "greater than zero" in line
    assert "tokenising" not in out and not (runtime / "optuna.db").exists()


def test_a_failed_trial_s_message_reaches_the_progress_line_and_mlflow(runtime, tiny_sweep, capsys, monkeypatch):
    real_build = bench_trial.build_network

    def refuse_real_vocabularies(arch, vocab_size, num_classes, **params):  # the pre-check's vocabulary: 10 words
        if vocab_size > 10:
            raise ValueError("no network for this vocabulary")
        return real_build(arch, vocab_size, num_classes, **params)

    monkeypatch.setattr(bench_trial, "build_network", refuse_real_vocabularies)
    code, out, _ = run(["sweep", tiny_sweep, "--reports", runtime / "reports"], capsys)
    assert code == 0  # failed trials are recorded, and the sweep goes on
    assert "trial 1/2 FAIL (ValueError: no network for this vocabulary)" in out
    client = MlflowClient(tracking_uri(load_config(tiny_sweep)))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.trial = '0'")
    assert runs[0].data.tags["error"] == "ValueError: no network for this vocabulary"
    assert runs[0].data.tags["state"] == "failed" and runs[0].info.status == "FAILED"
    error_file = client.download_artifacts(runs[0].info.run_id, "error.txt", str(runtime))
    assert "Traceback" in Path(error_file).read_text()


def test_an_unexpected_error_prints_one_line_and_saves_its_traceback(runtime, tiny_sweep, capsys, monkeypatch):
    def boom(*_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sweep, "run_sweep", boom)
    code, _, err = run(["sweep", tiny_sweep], capsys)
    line = one_error_line(err)
    assert code == 1 and "RuntimeError: disk on fire" in line and "--debug" in line
    log = Path(line.split("traceback in ")[1].split(";")[0])
    assert log.parent == runtime / "logs" and "Traceback" in log.read_text()
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["--debug", "sweep", str(tiny_sweep)])


def bench_process(*args, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)


# `bench ARGS` that signals itself as it prints the first line holding TEXT: the signal lands at that point of the
# run however loaded the machine is (a signal sent by the test once it reads the line may come after the end).
# SIGINT is handled as in a terminal: a test run started in the background (`cmd &`) inherits it ignored.
SIGNAL_AT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from bench import runtime
text, signum = sys.argv[1], int(sys.argv[2])
print_line = runtime.log
def log(message):
    print_line(message)
    if text in message:
        os.kill(os.getpid(), signum)
runtime.log = log  # before the modules that import it load
from bench.cli import main
sys.exit(main(sys.argv[3:]))
"""


def signalled_at(text, signum, args, env_extra):
    return bench_process("-c", SIGNAL_AT, text, str(int(signum)), *args, env_extra=env_extra)


def wait_for(process, text):
    """The output lines of `process` up to the first that holds `text`."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
    pytest.fail(f"{text!r} never printed:\n{''.join(lines)}")


def test_a_second_process_is_refused_and_a_killed_holder_blocks_nothing(runtime, tiny_sweep, capsys):
    hold = ("import sys, time; from pathlib import Path; from bench.runtime import only_process\n"
            "with only_process(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)")
    holder = bench_process("-c", hold, str(runtime / "optuna.db"))
    try:
        wait_for(holder, "held")
        code, _, err = run(["sweep", tiny_sweep], capsys)  # a fresh store: nothing of MLflow's is touched
        line = one_error_line(err)
        assert code == 2 and f"in use by another sweep (pid {holder.pid} on " in line and "since" in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, _, _ = run(["sweep", tiny_sweep, "--reports", runtime / "reports"], capsys)
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_killed_mid_trial_then_an_immediate_restart(runtime, tiny_sweep, signum):
    # Three epochs a trial, none stopped early: the signal, sent from inside at epoch 1, lands inside trial 1.
    args = ["sweep", str(tiny_sweep), "architectures=[lstm]", "study.n_trials=3", "study.max_epochs=3",
            "study.patience=3", "study.pruner.type=none", "--reports", str(runtime / "r")]
    first = signalled_at("trial 1 epoch 1/3", signum, args, env_extra={"BENCH_HOME": str(runtime)})
    rest = "".join(first.stdout)
    assert first.wait() == (130 if signum == signal.SIGINT else -signal.SIGKILL)
    if signum == signal.SIGINT:
        assert "interrupted: finished trials are kept" in rest and "Traceback" not in rest

    second = bench_process("-m", "bench", *args, env_extra={"BENCH_HOME": str(runtime)})
    output = "".join(second.stdout)
    assert second.wait() == 0, output
    assert "retry of trial 1" in output
    assert ("trial 1 was left running by a killed process" in output) == (signum == signal.SIGKILL)

    cfg = load_config(tiny_sweep, ["architectures=[lstm]"])
    study = optuna.load_study(study_name="tiny/imdb/lstm", storage=storage_url(cfg))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    # The budget's three trials were queued at the start: the retry of the killed one comes after them.
    killed, retry = study.trials[1], study.trials[3]
    assert retry.params == killed.params and retry.system_attrs["failed_trial"] == 1
    assert len(search.budget_trials(study)) == 3

    client = MlflowClient(tracking_uri(cfg))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed_run = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED" and killed_run.data.tags["state"] == "killed"


@pytest.mark.slow
def test_killed_mid_replicate_keeps_the_finished_ones_and_reruns_the_killed_one(runtime, tiny_sweep):
    args = ["sweep", str(tiny_sweep), "architectures=[lstm]", "study.n_trials=1", "study.replicates=3",
            "study.max_epochs=6", "study.patience=6", "--reports", str(runtime / "r")]
    # Replicate 0 has finished by then.
    first = signalled_at("replicate 1 epoch 1/6", signal.SIGKILL, args, env_extra={"BENCH_HOME": str(runtime)})
    assert first.wait() == -signal.SIGKILL
    cfg = load_config(tiny_sweep, ["architectures=[lstm]"])
    study = optuna.load_study(study_name="tiny/imdb/lstm", storage=storage_url(cfg))
    kept = {k: v for k, v in study.user_attrs.items() if k.startswith("replicate/")}
    assert list(kept) == ["replicate/0/0"]

    second = bench_process("-m", "bench", *args, env_extra={"BENCH_HOME": str(runtime)})
    output = "".join(second.stdout)
    assert second.wait() == 0, output
    assert "replicate 1/3" not in output and "replicate 2/3 of trial 0" in output  # 0 kept; 1 and 2 run
    client = MlflowClient(tracking_uri(cfg))
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.replicate != ''")
    by_state = sorted((r.data.tags["replicate"], r.info.status) for r in runs)
    assert by_state == [("0", "FINISHED"), ("1", "FINISHED"), ("1", "KILLED"), ("2", "FINISHED")]
    attrs = optuna.load_study(study_name="tiny/imdb/lstm", storage=storage_url(cfg)).user_attrs
    assert attrs["replicate/0/0"] == kept["replicate/0/0"] and sum(k.startswith("replicate/") for k in attrs) == 3


def test_model_input_may_be_a_list_a_series_or_a_frame():
    texts = ["good", "bad"]
    assert raw_texts_of(texts) == raw_texts_of(pd.Series(texts)) == raw_texts_of(pd.DataFrame({"text": texts})) == texts
    with pytest.raises(ValueError, match=r"row\(s\) \[1\]: text is missing"):
        raw_texts_of(pd.DataFrame({"text": ["good", None]}))
    with pytest.raises(ValueError, match="expected a 'text' column"):
        raw_texts_of(pd.DataFrame({"a": texts, "b": texts}))


def test_ui_lists_each_sweep_s_runs_page(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep_id = client.create_experiment("a-sweep")
    pages = runs_pages(client, "http://127.0.0.1:5000")
    # Not MLflow's empty Default; opened on model training rather than on the GenAI overview.
    assert pages == [f"a-sweep: http://127.0.0.1:5000/#/experiments/{sweep_id}?workflowType=machine_learning"]
