"""Kept models: a checkpoint file per model, and the MLflow model that predicts from raw text."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer

from bench import data as bench_data
from bench.models import ARCHITECTURES, USER_ARCHITECTURES, build_network, register_architecture
from bench.runtime import flush_denormals


def save_checkpoint(path: Path, architecture: str, network_params: dict, network: torch.nn.Module,
                    tokenizer: Tokenizer, class_names: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(
        {
            "architecture": architecture,
            "network_params": network_params,
            "vocab_size": tokenizer.get_vocab_size(),
            "class_names": list(class_names),  # by class: what the served model answers
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "tokenizer": tokenizer.to_str(),
            # A user's architecture: its `module:Class` and package folder, to import it again wherever it loads.
            "user_class": list(USER_ARCHITECTURES.get(architecture, ())),
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Tokenizer, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("user_class") and checkpoint["architecture"] not in ARCHITECTURES:
        class_path, code = checkpoint["user_class"]
        # In a served model the folder is the model's own copy, which MLflow puts on the import path.
        register_architecture(checkpoint["architecture"], class_path, code if code and Path(code).is_dir() else None)
    checkpoint.setdefault("class_names", ["negative", "positive"])  # saved before there were more classes
    network = build_network(checkpoint["architecture"], checkpoint["vocab_size"], len(checkpoint["class_names"]),
                            **checkpoint["network_params"])
    network.load_state_dict(checkpoint["state_dict"])
    network.eval()
    return network, Tokenizer.from_str(checkpoint["tokenizer"]), checkpoint


def probabilities_of(logits: torch.Tensor) -> torch.Tensor:
    """One logit per text: the positive class's probability; K: each class's."""
    return torch.sigmoid(logits) if logits.dim() == 1 else torch.softmax(logits, dim=-1)


def predicted_classes(probability: np.ndarray) -> np.ndarray:
    """The class of each row of predict_probabilities' answer."""
    return (probability > 0.5).astype(np.int64) if probability.ndim == 1 else probability.argmax(axis=1)


@torch.no_grad()
def predict_probabilities(network: torch.nn.Module, split: bench_data.Split) -> np.ndarray:
    """For each row of the split, in row order: the positive class's probability (two classes), or each class's (a
    (rows, K) array)."""
    network.eval()
    device = next(network.parameters()).device
    batches = bench_data.Batches(split)
    probability = None
    for rows in bench_data.BucketBatches(split.lengths, 512, shuffle=False):
        ids, lengths, _ = batches[rows]
        batch = probabilities_of(network(ids.to(device), lengths.to(device)).float()).cpu().numpy()
        if probability is None:
            probability = np.empty((len(split), *batch.shape[1:]), dtype=np.float32)
        probability[rows] = batch
    return np.empty(0, dtype=np.float32) if probability is None else probability  # None: no row, so no batch


def predict_texts(network: torch.nn.Module, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """predict_probabilities for raw texts, in order."""
    return predict_probabilities(network, bench_data.encode(tokenizer, texts, np.zeros(len(texts), dtype=np.int64)))


def raw_texts_of(model_input) -> list[str]:
    """The texts of a DataFrame's `text` column (or its only column), a Series or a list; a missing text is an
    error naming its row."""
    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns and len(model_input.columns) != 1:
            raise ValueError(f"expected a 'text' column; got columns {list(model_input.columns)}")
        model_input = model_input["text" if "text" in model_input.columns else model_input.columns[0]]
    elif isinstance(model_input, str):
        model_input = [model_input]
    series = pd.Series(model_input, dtype=object)
    missing = series.index[series.isna()].tolist()
    if missing:
        raise ValueError(f"row(s) {missing[:10]}: text is missing (null); every row needs a text")
    not_text = series.index[~series.map(lambda t: isinstance(t, str))].tolist()
    if not_text:
        raise ValueError(f"row(s) {not_text[:10]}: expected a string, got {type(series[not_text[0]]).__name__}")
    return series.tolist()


class RawTextModel(mlflow.pyfunc.PythonModel):
    """MLflow model: raw texts (a list, a Series, or a DataFrame with a `text` column) in; each text's predicted
    class name (`label`) and that class's probability out."""

    def load_context(self, context):
        flush_denormals()  # a served model's process is not started by bench's CLI
        self.network, self.tokenizer, checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        self.class_names = np.array(checkpoint["class_names"], dtype=object)

    # The type hint also tells MLflow not to infer a schema from it (it warns on a predict without hints).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        probability = predict_texts(self.network, self.tokenizer, raw_texts_of(model_input))
        classes = predicted_classes(probability)
        if probability.ndim == 1:  # the positive class's: the predicted one's is its complement when negative
            probability = np.where(classes == 1, probability, 1 - probability)
        else:
            probability = probability[np.arange(len(classes)), classes]
        return pd.DataFrame({"label": self.class_names[classes], "probability": probability})


def log_mlflow_model(checkpoint: Path, architecture: str, run_id: str, tracking_uri: str) -> None:
    """Log the checkpoint to the run as an MLflow pyfunc model named `model`, with bench's code and, for a user's
    architecture, the user's package folder."""
    import tokenizers

    _, code = USER_ARCHITECTURES.get(architecture, (None, None))
    user_code = [str(Path(code).resolve())] if code else []
    mlflow.set_tracking_uri(tracking_uri)  # log_model takes no store or run: it logs to the fluent API's active run
    with mlflow.start_run(run_id=run_id):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=RawTextModel(),
            artifacts={"checkpoint": str(checkpoint)},
            code_paths=[str(Path(__file__).parent), *user_code],
            # Stated, not inferred: inference loads the model in a subprocess, which is slow.
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"tokenizers=={tokenizers.__version__}",
                f"mlflow=={mlflow.__version__}",
                "pandas",
                "numpy",
            ],
        )
