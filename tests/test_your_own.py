"""Your own architecture: a network class from a package outside bench, checked before any data loads, swept,
replicated, reported and served like the built-in six."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from bench import models
from bench.cli import main
from bench.config import load_config
from bench.runtime import tracking_uri

NETS = '''
import torch
from torch import nn


class Mean(nn.Module):
    """Mean of the real tokens' embeddings: the contract's smallest network."""

    def __init__(self, vocab_size, num_classes, embed_dim=8):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.out = nn.Linear(embed_dim, 1)

    def forward(self, ids, lengths):
        mask = (torch.arange(ids.shape[1]) < lengths.unsqueeze(1)).unsqueeze(2)
        mean = (self.embedding(ids) * mask).sum(1) / lengths.unsqueeze(1)
        return self.out(mean).squeeze(1)


class TwoLogits(Mean):
    def forward(self, ids, lengths):
        return torch.stack([super().forward(ids, lengths)] * 2, dim=1)


class NotFinite(Mean):
    def forward(self, ids, lengths):
        return super().forward(ids, lengths) * float("inf")


class Unused(Mean):
    def __init__(self, vocab_size, num_classes, embed_dim=8):
        super().__init__(vocab_size, num_classes, embed_dim)
        self.spare = nn.Linear(3, 3)


class ReadsPadding(Mean):
    def forward(self, ids, lengths):
        return self.out(self.embedding(ids).mean(1)).squeeze(1)


class StateOutside(Mean):
    def __init__(self, vocab_size, num_classes, embed_dim=8):
        super().__init__(vocab_size, num_classes, embed_dim)
        self.shift = float(torch.rand(1))  # neither a parameter nor a buffer: lost by a state_dict

    def forward(self, ids, lengths):
        return super().forward(ids, lengths) + self.shift


class NoClasses(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()


NOT_A_MODULE = 3
'''


@pytest.fixture
def user_package(tmp_path):
    """A package `usernets` outside the repository, forgotten again after the test."""
    package = tmp_path / "outside" / "usernets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    (package / "broken.py").write_text("import a_dependency_that_is_not_installed\n")
    registered = dict(models.ARCHITECTURES)
    yield package
    for name in set(models.ARCHITECTURES) - set(registered):
        del models.ARCHITECTURES[name]
        models.USER_ARCHITECTURES.pop(name, None)
    for name in [m for m in sys.modules if m == "usernets" or m.startswith("usernets.")]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if p != str(package.parent)]


def user_arch(package, class_name, arch="mine") -> list[str]:
    return [f"user_architectures={{{arch}: {{class: usernets.{class_name}, code: {package}}}}}",
            f"architectures=[averaging, {arch}]"]


def refusal(args, capsys) -> str:
    """The one line `bench sweep` exits 2 with, before any data loads."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "tokenising" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("class_name, expected", [
    ("nets:Absent", "module 'usernets.nets' has no 'Absent'; it has: "),
    ("nowhere:Mean", "cannot import 'usernets.nowhere': No module named 'usernets.nowhere'"),
    ("broken:Anything", "importing 'usernets.broken' failed inside it: No module named "
                        "'a_dependency_that_is_not_installed'"),
    ("nets:NOT_A_MODULE", "usernets.nets:NOT_A_MODULE is not a torch.nn.Module class"),
    ("nets:NoClasses", "its constructor takes no num_classes"),
    ("nets:TwoLogits", "user_architectures.mine: mine with its defaults returns (2, 2) for 2 texts; expected "
                       "shape (2,)"),
    ("nets:NotFinite", "returns logits that are not finite"),
    ("nets:Unused", "passes no gradient to parameter(s) ['spare.weight', 'spare.bias']"),
    ("nets:ReadsPadding", "changes its logits when the batch is padded further with id 0"),
    ("nets:StateOutside", "gives other logits once rebuilt from its state_dict"),
])
def test_a_user_architecture_that_breaks_the_contract_is_refused_in_one_line(
        runtime, tiny_sweep, user_package, capsys, class_name, expected):
    line = refusal(["sweep", tiny_sweep, *user_arch(user_package, class_name)], capsys)
    assert expected in line and str(tiny_sweep) in line


def test_a_search_space_value_the_user_network_refuses_names_its_key(runtime, tiny_sweep, user_package, capsys):
    line = refusal(["sweep", tiny_sweep, *user_arch(user_package, "nets:Mean"), "search_spaces.mine.embed_dim=-1"],
                   capsys)
    assert "search_spaces.mine.embed_dim: mine refuses -1" in line


def test_a_user_architecture_may_not_take_a_built_in_name(runtime, tiny_sweep, user_package, capsys):
    line = refusal(["sweep", tiny_sweep, *user_arch(user_package, "nets:Mean", arch="lstm")], capsys)
    assert "'lstm' is a built-in architecture's name" in line


def test_its_parameters_are_searchable_by_name(tiny_sweep, user_package):
    cfg = load_config(tiny_sweep, [*user_arch(user_package, "nets:Mean"), "search_spaces.mine.embed_dim=4"])
    assert cfg.space_for("mine", "imdb")["embed_dim"] == 4
    with pytest.raises(Exception, match=r"unknown parameter\(s\) \['hidden_size'\] for architecture 'mine'"):
        load_config(tiny_sweep, [*user_arch(user_package, "nets:Mean"), "search_spaces.mine.hidden_size=4"])


SERVE = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
print(json.dumps(model.predict(["great superb loved it", "awful boring mess"])["label"].tolist()))
"""


@pytest.mark.slow
def test_a_user_architecture_is_swept_replicated_reported_and_served(runtime, tiny_sweep, user_package, tmp_path):
    args = [*user_arch(user_package, "nets:Mean"), "study.replicates=2", "search_spaces.mine.embed_dim=16"]
    assert main(["sweep", str(tiny_sweep), *args, "--reports", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert "| `mine` |" in report

    uri = tracking_uri(load_config(tiny_sweep, args))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              "tags.architecture = 'mine'")
    study = next(r for r in runs if "best_trial_run_id" in r.data.tags)
    replicates = [r for r in runs if "replicate" in r.data.tags]
    assert len(replicates) == 2 and all(r.data.metrics["test/acc"] > 0.5 for r in replicates)
    assert study.data.tags["best/embed_dim"] == "16"

    # A fresh process, the package's folder gone: the model carries its own copy.
    user_package.rename(tmp_path / "moved")
    served = subprocess.run([sys.executable, "-c", SERVE, uri, f"runs:/{study.info.run_id}/model"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout.strip().splitlines()[-1]) == ["positive", "negative"]


@pytest.mark.slow
def test_a_worker_with_other_code_is_refused(runtime, tiny_sweep, user_package, capsys):
    args = [*user_arch(user_package, "nets:Mean"), "architectures=[mine]", "study.n_trials=1", "--reports",
            str(runtime / "reports")]
    assert main(["sweep", str(tiny_sweep), *args]) == 0
    capsys.readouterr()
    (user_package / "nets.py").write_text(NETS + "\n# changed\n")
    line = refusal(["sweep", tiny_sweep, *args], capsys)
    assert "study tiny/imdb/mine: its trials ran usernets.nets:Mean with code hash" in line
