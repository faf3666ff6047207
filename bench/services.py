"""`bench services`: a local PostgreSQL (Optuna studies, MLflow's backend store) and an MLflow tracking server that
serves artifacts, on loopback for several workers on one machine, or on an address for workers on others. Their
state lives in .bench/services/; services.env there holds what workers need: BENCH_STORAGE and BENCH_TRACKING_URI
and, off loopback, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, the generated passwords included.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.runtime import UserError, redacted, runtime_dir

USER = "bench"  # the cluster's superuser and the MLflow server's admin; their passwords are generated once, kept here
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # an MLflow server on these is reachable from this machine only


def folder() -> Path:
    path = runtime_dir() / "services"
    path.mkdir(parents=True, exist_ok=True)
    return path


def postgres_bin(name: str) -> str:
    """A PostgreSQL program: Debian keeps them out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name)
                                                                       else [])
    if not found:
        raise UserError(f"PostgreSQL's {name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return found[-1]


def as_postgres_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def read_env() -> dict[str, str]:
    path = folder() / "services.env"
    if not path.is_file():
        return {}
    return dict(line.removeprefix("export ").split("=", 1) for line in path.read_text().split("\n") if "=" in line)


def start(pg_port: int = 5433, mlflow_port: int = 5001, host: str = "127.0.0.1", log=print) -> dict[str, str]:
    """Start both services unless they run already; returns {BENCH_STORAGE, BENCH_TRACKING_URI}."""
    env = read_env()
    if env and _healthy(env["BENCH_TRACKING_URI"]):
        log(f"services already running: MLflow {env['BENCH_TRACKING_URI']}, Optuna {redacted(env['BENCH_STORAGE'])}")
        return env
    password = _secret("password")
    data = folder() / "postgres"
    if not (data / "PG_VERSION").is_file():
        _init_cluster(data, password)
    remote = host not in LOOPBACK
    if remote:
        _allow_remote(data)
    _start_postgres(data, host, pg_port)
    base = f"postgresql://{USER}:{password}@{host}:{pg_port}"
    _create_databases(f"{base}/postgres", ["optuna", "mlflow", "mlflow_auth"])
    env = {"BENCH_STORAGE": f"{base}/optuna", "BENCH_TRACKING_URI": f"http://{host}:{mlflow_port}"}
    if remote:  # MLflow's own auth app: anyone who reaches the server could otherwise read, delete and upload
        env |= {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": _secret("mlflow-password")}
    _start_mlflow(f"{base}/mlflow", host, mlflow_port, auth_store=f"{base}/mlflow_auth" if remote else None)
    path = folder() / "services.env"
    path.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    path.chmod(0o600)  # it holds the passwords
    log(f"PostgreSQL on {host}:{pg_port} (data {data}), MLflow server on {env['BENCH_TRACKING_URI']} (artifacts "
        f"{folder() / 'mlartifacts'}, {'user ' + USER + ' and a password' if remote else 'no login: loopback only'})"
        f"; to use them: source {path}")
    return env


def _secret(name: str) -> str:
    """A password generated once and kept, readable by this user only, in the services folder."""
    path = folder() / name
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(16))
        path.chmod(0o600)
    return path.read_text().strip()


def _init_cluster(data: Path, password: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    pwfile = Path(f"/tmp/bench-pw-{os.getpid()}")
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        shutil.chown(pwfile, "postgres")
    try:
        _run(as_postgres_owner([postgres_bin("initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
                                "--auth=scram-sha-256", "--encoding=UTF8"]), "initdb")
    finally:
        pwfile.unlink()


def _allow_remote(data: Path) -> None:
    """Let other machines connect, with the password (initdb allows loopback only)."""
    hba = data / "pg_hba.conf"
    rule = "host all all 0.0.0.0/0 scram-sha-256"
    lines = subprocess.run(as_postgres_owner(["cat", str(hba)]), capture_output=True, text=True).stdout
    if rule not in lines:
        subprocess.run(as_postgres_owner(["sh", "-c", f"echo '{rule}' >> {hba}"]), check=True)


def _start_postgres(data: Path, host: str, port: int) -> None:
    pg_ctl = postgres_bin("pg_ctl")
    status = subprocess.run(as_postgres_owner([pg_ctl, "-D", str(data), "status"]), capture_output=True)
    if status.returncode == 0:
        return
    options = f"-c listen_addresses={host} -p {port} -k {data}"  # socket in the data folder: no /run rights needed
    _run(as_postgres_owner([pg_ctl, "-D", str(data), "-l", str(data / "server.log"), "-o", options, "-w", "start"]),
         "pg_ctl start")


def _create_databases(admin_url: str, names: list[str]) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        present = {row[0] for row in connection.execute(sqlalchemy.text("SELECT datname FROM pg_database"))}
        for name in names:
            if name not in present:
                connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def _start_mlflow(backend_url: str, host: str, port: int, auth_store: str | None) -> None:
    """The tracking server; with `auth_store`, behind MLflow's basic-auth app, its users kept in that database."""
    artifacts = folder() / "mlartifacts"
    log_file = open(folder() / "mlflow-server.log", "a")  # noqa: SIM115 (the server keeps it open)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_url, "--serve-artifacts",
               "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port), "--workers", "2"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if auth_store:
        command += ["--app-name", "basic-auth"]
        env |= {"MLFLOW_AUTH_CONFIG_PATH": str(_write_auth_config(auth_store)),
                "MLFLOW_AUTH_ADMIN_PASSWORD": _secret("mlflow-password"),  # the admin made on the first start
                "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret("mlflow-secret-key")}  # its CSRF protection's key
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)  # outlives this command
    (folder() / "mlflow-server.pid").write_text(str(process.pid))
    url = f"http://{host}:{port}"
    for _ in range(120):
        if _healthy(url):
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise UserError(f"the MLflow server did not start on {url}: see {folder() / 'mlflow-server.log'}")


def _write_auth_config(auth_store: str) -> Path:
    path = folder() / "mlflow-auth.ini"
    path.write_text("[mlflow]\n"
                    "default_permission = NO_PERMISSIONS\n"  # users other than the admin get nothing unless granted
                    f"database_uri = {auth_store}\n"
                    f"admin_username = {USER}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    path.chmod(0o600)  # it holds the database's password
    return path


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(log=print) -> None:
    pid_file = folder() / "mlflow-server.pid"
    if pid_file.is_file():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        pid_file.unlink()
    data = folder() / "postgres"
    if (data / "PG_VERSION").is_file():
        subprocess.run(as_postgres_owner([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
    (folder() / "services.env").unlink(missing_ok=True)
    log("services stopped")


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"{what} failed: {(result.stderr or result.stdout).strip()[-800:]}")
