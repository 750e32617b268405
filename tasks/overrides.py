"""Config overrides by dotted field path: the one place the CLI's flags and the flow's parameters
come from, so a flag, a flow parameter and the YAML key it sets cannot drift apart.

    niftytune run --max-steps 20                        # a named flag: NAMED, below
    niftytune run --set training.lora_r=32 --set market.fetch_workers=2   # any leaf of the Config
    RetrainParameters(max_steps=20, overrides={"training.lora_r": 32})     # the flow, the same keys

A named override is a dotted path of `tasks.config.Config`; its flag (`--max-steps`) and flow
parameter (`max_steps`) are the leaf's name, its type and constraints the field's. `--set` reaches
every leaf (`leaf_fields()`); the value is text the field's type converts ("20", "true",
"2e-4", "15:30"), `null` for none, or a YAML flow list or mapping (`[q_proj, v_proj]`).
"""
from __future__ import annotations

import difflib
import types
import typing
from typing import Any, NamedTuple, TypeGuard

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tasks.config import Config


class NamedOverride(NamedTuple):
    """A config field with its own flag and flow parameter; `help` serves both."""

    path: str
    help: str
    metavar: str | None = None

    @property
    def param(self) -> str:
        """The flow parameter and the CLI's keyword: the leaf's name (`max_steps`)."""
        return self.path.rpartition(".")[2]

    @property
    def flag(self) -> str:
        return "--" + self.param.replace("_", "-")


NAMED: tuple[NamedOverride, ...] = (
    NamedOverride("market.source", "Where market data comes from: yahoo (live), csv (a folder of yfinance-format "
                                   "<TICKER>.csv files, replayed) or synthetic (seeded, offline). Default: the "
                                   "profile's (yahoo)."),
    NamedOverride("market.csv_dir", "Folder of <TICKER>.csv files, for source csv only. Default: none.", "DIR"),
    NamedOverride("training.base_model", "Model to fine-tune: embedded:smollm2-135m-instruct, a Hugging Face id "
                                         "or a folder. Default: the profile's (embedded SmolLM2-135M).", "ID|DIR"),
    NamedOverride("training.base_revision", "Commit to pin a Hugging Face base model to. Default: none (the "
                                            "profile's).", "SHA"),
    NamedOverride("gate.min_delta", "Validation-loss improvement a new adapter needs to be promoted. Default: "
                                    "the profile's (0.005).", "X"),
    NamedOverride("training.max_steps", "Most training steps (-1: no cap). Default: the profile's (cpu 8, gpu no "
                                        "cap).", "N"),
    NamedOverride("samples.max_train_samples", "Most grounded training conversations. Default: the profile's "
                                               "(cpu 32, gpu 2500).", "N"),
)


def _is_section(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def leaf_fields(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, FieldInfo]:
    """Every settable field of the config by dotted path (`training.max_steps`), sections walked."""
    leaves: dict[str, FieldInfo] = {}
    for name, info in model.model_fields.items():
        if _is_section(info.annotation):
            leaves.update(leaf_fields(info.annotation, f"{prefix}{name}."))
        else:
            leaves[prefix + name] = info
    return leaves


def without_none(annotation: Any) -> Any:
    """`int | None` -> `int`; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]
    return annotation


def check_key(key: str) -> None:
    """ValueError naming `key` and the nearest field names when it is no leaf of the config."""
    leaves = leaf_fields()
    if key not in leaves:
        near = difflib.get_close_matches(key, leaves, n=3)
        hint = f"did you mean {', '.join(near)}?" if near else "fields are named section.field, e.g. training.max_steps"
        raise ValueError(f"no config field {key!r} ({hint})")


def parse_set(text: str) -> tuple[str, Any]:
    """`section.field=value` -> (path, value); ValueError naming the key or the missing `=`."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ValueError(f"--set {text!r}: expected section.field=value, e.g. training.max_steps=20")
    try:
        check_key(key)
    except ValueError as exc:
        raise ValueError(f"--set {text!r}: {exc}") from None
    value = raw.strip()
    if value in ("null", "~"):
        return key, None
    if value[:1] in ("[", "{"):  # a list or a mapping, written as in a profile
        try:
            return key, yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {key}: not a YAML list or mapping: {value!r} ({exc.problem})") from None
    return key, value  # the field's type converts it (pydantic's lax mode: "20" -> 20, "true" -> True)


def merge(named: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """Named overrides (None: not given) and dotted ones in one dict; a key given both ways with
    different values, or no leaf of the config, is a ValueError naming it."""
    merged = {path: value for path, value in named.items() if value is not None}
    for key, value in (extra or {}).items():
        check_key(key)
        if key in merged and merged[key] != value:
            flag = next(o.flag for o in NAMED if o.path == key)
            raise ValueError(f"{key} given twice: {flag} {merged[key]} and {key}={value}")
        merged[key] = value
    return merged
