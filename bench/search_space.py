"""The search-space entries of a sweep config: a parameter's distribution (float, int or categorical range) or its
fixed value, validated by pydantic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_range(spec):
    if not spec.low < spec.high:
        raise ValueError(f"empty or inverted range: low={spec.low} must be below high={spec.high}")
    if spec.log and spec.low <= 0:
        raise ValueError(f"log scale needs low > 0, got low={spec.low}")
    return spec


class FloatParam(Strict):
    type: Literal["float"]
    low: float = Field(description="lowest value")
    high: float = Field(description="highest value")
    log: bool = Field(False, description="sample on a log scale")

    _range = model_validator(mode="after")(_check_range)


class IntParam(Strict):
    type: Literal["int"]
    low: int = Field(description="lowest value")
    high: int = Field(description="highest value")
    step: int = Field(1, ge=1, description="spacing of the values")
    log: bool = Field(False, description="sample on a log scale")

    _range = model_validator(mode="after")(_check_range)


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[int | float | str | bool] = Field(min_length=1, description="the values to choose from")


Distribution = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _spec_kind(value) -> str:
    return "distribution" if isinstance(value, dict | BaseModel) else "fixed"


# A mapping with `type` searches the parameter; a plain value fixes it. Told apart before validation, so that an
# error names only the branch the value meant.
ParamSpec = Annotated[Annotated[Distribution, Tag("distribution")] | Annotated[int | float | str | bool, Tag("fixed")],
                      Discriminator(_spec_kind)]
SearchSpace = dict[str, ParamSpec]
