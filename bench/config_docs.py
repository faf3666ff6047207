"""docs/config.md, generated from the sweep config's pydantic models: `python -m bench.config_docs > docs/config.md`
(`nox -s docs`); a test keeps the two in step."""

from __future__ import annotations

import sys
import typing

import yaml
from pydantic import BaseModel

from bench.config import LR_SCHEDULES, TRAINING_PARAMS, SweepConfig, network_params
from bench.models import BUILT_IN
from bench.search_space import CategoricalParam, FloatParam, IntParam


def _nested_model(annotation) -> type[BaseModel] | None:
    """The settings model a field holds, directly or as the values of a mapping."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    return yaml.safe_dump(field.default, default_flow_style=True).strip().removesuffix("\n...")


def reference_rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    """One markdown table row per setting of `model`, nested settings as dotted keys."""
    rows = []
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
        key = prefix + (field.alias or name)
        if nested is not None:
            placeholder = (field.json_schema_extra or {}).get("key")
            rows += reference_rows(nested, f"{key}.{placeholder}." if placeholder else f"{key}.")
        elif field.description:  # a distribution's `type` has none: it names the table
            rows.append(f"| `{key}` | {field.description} | `{_default_text(field)}` |")
    return rows


def reference_markdown() -> str:
    """docs/config.md: every setting of a sweep config, generated from the models above."""
    table = ["| key | meaning | default |", "| --- | --- | --- |"]
    distributions = []
    for model in (FloatParam, IntParam, CategoricalParam):
        kind = typing.get_args(model.model_fields["type"].annotation)[0]
        distributions += [f"**`{{type: {kind}}}`**", "", *table, *reference_rows(model), ""]
    return "\n".join([
        "# Sweep config reference",
        "",
        "_Generated from the field descriptions in `bench/config.py` by "
        "`python -m bench.config_docs > docs/config.md`; a test keeps the two in step._",
        "",
        "A sweep is a YAML file in `sweeps/`. Unknown keys, wrong types, unknown architectures or parameters, and "
        "empty or inverted ranges are errors naming the file and the key. Any value can be overridden on the "
        "command line: `key.path=value`, the value read as YAML.",
        "",
        *table,
        *reference_rows(SweepConfig),
        "",
        "## Search-space parameters",
        "",
        "A parameter is a fixed value (`batch_size: 64`) or a distribution. Training parameters are "
        f"{', '.join(f'`{p}`' for p in sorted(TRAINING_PARAMS))} (`lr_schedule`: "
        f"{' or '.join(f'`{s}`' for s in LR_SCHEDULES)}, the second a linear warmup over the first 5% of the epoch "
        "cap's steps, then cosine to zero at the cap); the others are the network's arguments, described in "
        "`bench/models.py`:",
        "",
        "| architecture | network parameters |",
        "| --- | --- |",
        *[f"| `{arch}` | {', '.join(f'`{p}`' for p in sorted(network_params(arch)))} |" for arch in BUILT_IN],
        "",
        *distributions,
    ])


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
