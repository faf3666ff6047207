"""Kept models: a checkpoint file per model, and the MLflow model that predicts from raw text."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer

from bench.data import encode_texts
from bench.models import build_network
from bench.runtime import flush_denormals


def save_checkpoint(path: Path, architecture: str, network_params: dict, network: torch.nn.Module,
                    tokenizer: Tokenizer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(
        {
            "architecture": architecture,
            "network_params": network_params,
            "vocab_size": tokenizer.get_vocab_size(),
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "tokenizer": tokenizer.to_str(),
        },
        tmp,
    )
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, Tokenizer, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    network = build_network(checkpoint["architecture"], checkpoint["vocab_size"], **checkpoint["network_params"])
    network.load_state_dict(checkpoint["state_dict"])
    network.eval()
    return network, Tokenizer.from_str(checkpoint["tokenizer"]), checkpoint


@torch.no_grad()
def predict_proba(network: torch.nn.Module, tokenizer: Tokenizer, texts: list[str], batch_size: int = 512):
    """Probability that each text is positive."""
    probabilities = []
    for start in range(0, len(texts), batch_size):
        ids, lengths = encode_texts(tokenizer, texts[start : start + batch_size])
        probabilities.append(torch.sigmoid(network(ids, lengths).float()).numpy())
    return np.concatenate(probabilities) if probabilities else np.zeros(0, dtype=np.float32)


def texts_of(model_input) -> list[str]:
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
    """MLflow model: raw texts (a list, a Series, or a DataFrame with a `text` column) in, label and probability
    out."""

    def load_context(self, context):
        flush_denormals()  # a served model's process is not started by bench's CLI
        self.network, self.tokenizer, _ = load_checkpoint(context.artifacts["checkpoint"])

    # The type hint also tells MLflow not to infer a schema from it (it warns on a predict without hints).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        probability = predict_proba(self.network, self.tokenizer, texts_of(model_input))
        return pd.DataFrame({"label": (probability > 0.5).astype(int), "probability": probability})


def log_mlflow_model(checkpoint: Path) -> None:
    """Log the checkpoint as an MLflow pyfunc model named `model` in the active run."""
    import tokenizers

    mlflow.pyfunc.log_model(
        name="model",
        python_model=RawTextModel(),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(Path(__file__).parent)],
        # Stated, not inferred: inference loads the model in a subprocess, which is slow.
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"tokenizers=={tokenizers.__version__}",
            f"mlflow=={mlflow.__version__}",
            "pandas",
            "numpy",
        ],
    )
