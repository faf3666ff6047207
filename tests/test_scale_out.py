"""Several workers on one sweep, against a real PostgreSQL and MLflow server (`bench services`, which .ci/run
starts): exact budgets, one run, test and model per study, killed workers' trials and replicates retried."""

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from bench import outages, search
from bench.cli import main
from bench.services import as_postgres_owner, postgres_bin

ROOT = Path(__file__).parent.parent
ARCHS = ["lstm", "averaging"]
N_TRIALS, REPLICATES = 4, 2


@pytest.fixture(scope="session")
def services():
    """The URIs of the local PostgreSQL and MLflow server, started unless they run already."""
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_HOME", "BENCH_STORAGE", "BENCH_TRACKING_URI")}
    started = subprocess.run([sys.executable, "-m", "bench", "services", "--detach"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        if os.environ.get("BENCH_REQUIRE_SERVICES"):  # set by .ci/run, which installs PostgreSQL
            pytest.fail(started.stderr)
        pytest.skip(f"no local PostgreSQL and MLflow server: {started.stderr.strip()}")
    lines = (ROOT / ".bench" / "services" / "services.env").read_text().split()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def sweep_args(tiny_sweep, services, name, reports, workers, datasets=("imdb",), archs=ARCHS, epochs=10):
    return ["-m", "bench", "sweep", str(tiny_sweep), f"name={name}", f"storage={services['BENCH_STORAGE']}",
            f"tracking_uri={services['BENCH_TRACKING_URI']}", "heartbeat=2", f"architectures=[{', '.join(archs)}]",
            f"datasets=[{', '.join(datasets)}]", f"study.n_trials={N_TRIALS}", f"study.max_epochs={epochs}",
            f"study.patience={epochs}", "study.pruner.type=none",
            f"study.replicates={REPLICATES}", "--workers", str(workers), "--reports", str(reports)]


def start(args, runtime):
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_HOME": str(runtime)})


def check_sweep_is_complete_and_exact(services, name, datasets=("imdb",), archs=ARCHS):
    """Exact trial budgets, one parent run, test evaluation, model and set of replicates per study, and nothing
    left running; returns the MLflow runs."""
    storage = services["BENCH_STORAGE"]
    for dataset in datasets:
        for arch in archs:
            study = optuna.load_study(study_name=f"{name}/{dataset}/{arch}", storage=storage)
            assert len(search.budget_trials(study)) == N_TRIALS, (dataset, arch)
            assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING)), (dataset, arch)
    client = MlflowClient(services["BENCH_TRACKING_URI"])
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r.data.tags for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    studies = sorted((r.data.tags["dataset"], r.data.tags["architecture"]) for r in parents)
    assert studies == sorted((d, a) for d in datasets for a in archs)  # one run per study
    for parent in parents:
        assert len(client.get_metric_history(parent.info.run_id, "test/acc")) == 1
        models = client.search_logged_models([experiment.experiment_id],
                                             filter_string=f"source_run_id = '{parent.info.run_id}'")
        assert len(models) == 1
        replicates = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id
                      and "replicate" in r.data.tags and r.info.status == "FINISHED"]
        assert sorted(r.data.tags["replicate"] for r in replicates) == [str(r) for r in range(REPLICATES)]
    return runs


def kill_if_running(pid: int, name: str, number: int, services) -> bool:
    """SIGKILL the worker if it is still running the lstm study's trial `number` (its line may come late, on a busy
    machine, after the trial has finished); returns whether it was killed."""
    os.kill(pid, signal.SIGSTOP)  # frozen, it can finish nothing while the store is read
    study = optuna.load_study(study_name=f"{name}/imdb/lstm", storage=services["BENCH_STORAGE"])
    running = study.trials[number].state == TrialState.RUNNING
    os.kill(pid, signal.SIGKILL if running else signal.SIGCONT)
    return running


@pytest.mark.slow
def test_three_workers_one_killed_mid_trial(services, tiny_sweep, tmp_path):
    name = f"scale-{uuid.uuid4().hex[:8]}"
    launcher = start(sweep_args(tiny_sweep, services, name, tmp_path / "reports", 3), tmp_path / "runtime")
    pids, killed, lines = {}, None, []
    for line in launcher.stdout:
        lines.append(line)
        if started := re.match(r"worker (\d+): pid (\d+)", line):
            pids[started[1]] = int(started[2])
        trial = re.match(r"\[w(\d+)\] \[imdb/lstm\] trial (\d+) epoch 1/10", line)
        if trial and killed is None and kill_if_running(pids[trial[1]], name, int(trial[2]), services):
            killed = int(trial[2])
    output = "".join(lines)
    print(output)  # pytest shows it whole under a failure's captured stdout; an assertion message is cut
    assert launcher.wait() == 1 and killed is not None, output  # 1: a worker died; the others finished

    study = optuna.load_study(study_name=f"{name}/imdb/lstm", storage=services["BENCH_STORAGE"])
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    trials = [(t.number, t.state.name, t.system_attrs) for t in study.trials]  # what a failure needs to be read
    assert len(retries) == 1 and retries[0].params == study.trials[killed].params, (killed, trials, output)
    assert retries[0].state == TrialState.COMPLETE
    runs = check_sweep_is_complete_and_exact(services, name)
    killed_run = next(r for r in runs if r.data.tags.get("trial") == str(killed)
                      and r.data.tags["architecture"] == "lstm" and r.info.status == "KILLED")
    assert killed_run.data.tags["state"] == "killed"
    assert len({r.data.tags["worker"] for r in runs if "trial" in r.data.tags}) >= 2

    # The password is in no output, tag, parameter or report.
    password = urllib.parse.urlsplit(services["BENCH_STORAGE"]).password
    report = (tmp_path / "reports" / name / "README.md").read_text()
    texts = [output, report] + [v for r in runs for v in (*r.data.tags.values(), *r.data.params.values())]
    assert not [t for t in texts if password in t]
    assert "worker processes: 3, on 1 host(s)" in report or "worker processes: 2, on 1 host(s)" in report


@pytest.mark.slow
def test_every_worker_killed_then_restarted_finishes_with_nothing_repeated(services, tiny_sweep, tmp_path):
    name = f"scale-{uuid.uuid4().hex[:8]}"
    args = sweep_args(tiny_sweep, services, name, tmp_path / "reports", 2)
    first = start(args, tmp_path / "runtime")
    for line in first.stdout:
        if re.match(r"\[w\d\] \[imdb/lstm\] trial 2 epoch 1/10", line):  # two averaging trials... and more finished
            break
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = {t.number: t.user_attrs.get("mlflow_run_id") for t in optuna.load_study(
        study_name=f"{name}/imdb/lstm", storage=services["BENCH_STORAGE"]).trials if t.state == TrialState.COMPLETE}

    second = start(args, tmp_path / "runtime")
    output = second.stdout.read()
    assert second.wait() == 0, output
    check_sweep_is_complete_and_exact(services, name)
    after = optuna.load_study(study_name=f"{name}/imdb/lstm", storage=services["BENCH_STORAGE"]).trials
    assert all(after[n].user_attrs.get("mlflow_run_id") == run for n, run in before.items())  # kept, not rerun



@pytest.mark.slow
def test_a_database_restart_mid_trial_loses_no_trial(services, tiny_sweep, tmp_path):
    """PostgreSQL restarted (`pg_ctl restart -m fast`) while 2 workers train: every call that lost its connection is
    retried, so the sweep ends exact with no trial failed, and no traceback is printed."""
    name = f"restart-{uuid.uuid4().hex[:8]}"
    launcher = start(sweep_args(tiny_sweep, services, name, tmp_path / "reports", 2), tmp_path / "runtime")
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if re.match(r"\[w\d+\] \[imdb/lstm\] trial 1 epoch 1/10", line):
            break
    data = ROOT / ".bench" / "services" / "postgres"
    # -l: the restarted server logs to its file, not to this pipe (which would then never close).
    restart = subprocess.run(as_postgres_owner([postgres_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"),
                                                "-m", "fast", "-w", "restart"]), capture_output=True, text=True,
                             timeout=120)
    assert restart.returncode == 0, restart.stderr
    lines.extend(launcher.stdout)
    output = "".join(lines)
    assert launcher.wait() == 0, output
    assert "Traceback" not in output and "Exception in thread" not in output, output
    check_sweep_is_complete_and_exact(services, name)
    for arch in ARCHS:
        study = optuna.load_study(study_name=f"{name}/imdb/{arch}", storage=services["BENCH_STORAGE"])
        assert not study.get_trials(states=(TrialState.FAIL,)), arch
    print(f"lines about the outage: {[line for line in lines if 'unreachable' in line]}")


@pytest.mark.slow
def test_eight_workers_on_four_studies(services, tiny_sweep, tmp_path):
    """8 single-thread workers on 2 cores, 2 datasets x the 2 fast architectures (contention is the point, not
    training): the locks, the queue top-up and the server under it. Exact budgets, a run, test and model per
    study, replicates once each, nothing left running, and every worker exits."""
    name, datasets, archs = f"many-{uuid.uuid4().hex[:8]}", ("imdb", "sentiment140"), ("averaging", "bag_concat")
    args = sweep_args(tiny_sweep, services, name, tmp_path / "reports", 8, datasets, archs, epochs=1)
    launcher = start(args, tmp_path / "runtime")
    output, _ = launcher.communicate(timeout=900)  # a worker stuck waiting would hold it past this
    assert launcher.returncode == 0, output
    assert len(re.findall(r"^worker \d+: pid \d+, 1 CPU thread", output, re.MULTILINE)) == 8, output
    assert "Traceback" not in output, output
    runs = check_sweep_is_complete_and_exact(services, name, datasets, archs)
    assert len({r.data.tags["worker"] for r in runs if "trial" in r.data.tags}) >= 4  # the work was shared

def test_several_workers_on_sqlite_are_refused(runtime, tiny_sweep, capsys):
    assert main(["sweep", str(tiny_sweep), "--workers", "2"]) == 2
    error = capsys.readouterr().err
    assert "--workers 2: SQLite takes one process at a time" in error and "PostgreSQL" in error


def test_a_password_in_an_error_is_hidden(runtime, tiny_sweep, capsys):
    code = main(["sweep", str(tiny_sweep), "storage=postgresql://bench:hunter2@127.0.0.1:1/optuna"])
    error = capsys.readouterr().err
    assert code != 0 and "hunter2" not in error and "bench:***@127.0.0.1" in error
    assert not [p for p in (runtime / "logs").glob("*.log") if "hunter2" in p.read_text()]


def start_services(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "services", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_server_for_other_machines_refuses_a_client_without_the_password(services):
    """`services --host` off loopback: an unauthenticated request is refused, services.env's login is let in, and
    the password shows nowhere. Ports and folder of its own, beside the tier's loopback services."""
    home = ROOT / ".bench" / "remote-services-test"  # not tmp_path: the postgres user must reach its data folder
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "MLFLOW_"))}, "BENCH_HOME": str(home)}
    started = start_services(env, "--detach", "--host", "0.0.0.0", "--pg-port", "5434", "--mlflow-port", "5002")
    try:
        assert started.returncode == 0, started.stderr
        lines = (home / "services" / "services.env").read_text().split()
        login = dict(line.split("=", 1) for line in lines if "=" in line)
        url, password = login["BENCH_TRACKING_URI"], login["MLFLOW_TRACKING_PASSWORD"]
        assert password not in started.stdout + started.stderr and "user bench and a password" in started.stdout
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
        assert refused.value.code == 401
        with pytest.raises(Exception, match="401|not authenticated|Unauthorized"):
            MlflowClient(url).create_experiment("intruder")
        os.environ.update(MLFLOW_TRACKING_USERNAME=login["MLFLOW_TRACKING_USERNAME"], MLFLOW_TRACKING_PASSWORD=password)
        try:
            client = MlflowClient(url)
            experiment = client.create_experiment(f"let-in-{uuid.uuid4().hex[:8]}")
            assert client.get_experiment(experiment).name.startswith("let-in-")
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    finally:
        start_services(env, "--stop")
        shutil.rmtree(home, ignore_errors=True)


def test_a_call_that_loses_its_connection_is_retried_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(outages, "PAUSE", 0.0)
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("terminating connection"))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise optuna.exceptions.StorageInternalError("commit failed") from lost  # as Optuna's storage raises
        return "answer"

    assert outages.retrying(flaky)() == "answer" and len(calls) == 3
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "PostgreSQL was unreachable for" in out[0] and "terminating connection" in out[0]
    with pytest.raises(ValueError):  # any other error is the call's own
        outages.retrying(lambda: int("x"))()
