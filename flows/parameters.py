"""The daily flow's parameters (`RetrainParameters`), the form *Run settings* in the Prefect UI.

Its config overrides come from `tasks.overrides`: one parameter per named override (`max_steps`,
typed and constrained as the config's `training.max_steps`), and `overrides`, any config field by
dotted path, as `niftytune run --set` gives them. `config()` applies both to the profile.
"""
from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from tasks import overrides
from tasks.config import Config, load_config, select_tickers


def _operator_form(schema: dict[str, Any]) -> None:
    """Render every optional field as a plain input: Prefect's form shows `X | None` as a choice
    of types that opens on "None" with no input, so the null branch is dropped (an empty field
    is left out of the run's parameters and takes the default the description states)."""
    for prop in schema.get("properties", {}).values():
        branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1 and len(prop["anyOf"]) == 2:
            del prop["anyOf"]
            prop.update(branches[0])
            if prop.get("default", "") is None:  # a null default would be sent as null
                del prop["default"]


class _Parameters(BaseModel):
    model_config = ConfigDict(json_schema_extra=_operator_form)

    if TYPE_CHECKING:  # fields that create_model adds below, in the form's order
        profile: str | None
        overrides: dict[str, Any] | None
        tickers: list[str] | None

    @field_validator("overrides", check_fields=False)
    @classmethod
    def _known_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in value or {}:
            overrides.check_key(key)  # a typo fails when the run is created, naming the key
        return value

    def config(self) -> Config:
        """The profile with these parameters applied."""
        named = {o.path: getattr(self, o.param) for o in overrides.NAMED}
        return select_tickers(load_config(self.profile, overrides.merge(named, self.overrides)), self.tickers)


def _named_field(named: overrides.NamedOverride) -> tuple[Any, Any]:
    """The flow parameter of a named override: the config field's type and constraints, optional."""
    info = overrides.leaf_fields()[named.path]
    annotation = overrides.without_none(info.annotation)
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return Optional[annotation], Field(None, description=named.help)


# Typed Any: mypy checks a ** argument against every keyword of create_model (`__doc__`, `__base__`, ...).
_NAMED_FIELDS: dict[str, Any] = {named.param: _named_field(named) for named in overrides.NAMED}

if TYPE_CHECKING:
    class RetrainParameters(_Parameters):
        """What mypy knows of the class create_model makes below (it cannot type a made class)."""

        as_of: date | None
        force: bool
        dry_run: bool
        home: str | None

        def __init__(self, **data: Any) -> None: ...  # the fields above, and overrides.NAMED's
else:
    RetrainParameters = create_model(
        "RetrainParameters", __base__=_Parameters,
        __doc__="What this run does. Leave a field empty to use its default.",
        as_of=(Optional[date], Field(None, description="Trading day to run for. Default: today in Asia/Kolkata.")),
        tickers=(Optional[list[str]], Field(None, description="Symbols to use instead of the profile's list, "
                                                              "e.g. ^NSEI and TCS.NS. Default: the profile's list.")),
        profile=(Optional[str], Field(None, description="Settings profile: cpu, gpu, laptop-4gb or a YAML file's "
                                                        "path. Default: gpu on a CUDA machine, else cpu.")),
        **_NAMED_FIELDS,
        overrides=(Optional[dict[str, Any]], Field(None, description=(
            "Any other settings, by dotted name as in a profile, e.g. {\"training.lora_r\": 32, "
            "\"market.fetch_workers\": 2}. Default: none (the profile's)."))),
        force=(bool, Field(False, description="Retrain a day that already has a decision. Default: off.")),
        dry_run=(bool, Field(False, description="Train, score and decide, but register nothing. Default: off.")),
        home=(Optional[str], Field(None, description="Folder of the market data, adapters and registry. Default: "
                                                     "the deployment's (`niftytune serve --home`).")),
    )
