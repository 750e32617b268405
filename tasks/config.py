"""The one config model of niftytune, its YAML profiles, and the runtime home.

    cfg = load_config("cpu", overrides={"training.max_steps": 20})

A profile is a complete YAML file in `configs/` (or any path); `overrides` take dotted field
names and replace single fields, which is how CLI flags and flow parameters reach the config
(tasks/overrides.py). The sections' fields are defined in tasks/config_sections.py.
The resolved config is logged at the start of a run and saved in every manifest.
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, model_validator

from common.home import resolve_home  # noqa: F401  (re-exported: tasks.config.resolve_home)
from tasks.config_sections import (DEFAULT_UNIVERSE, EMBEDDED_BASE_MODEL, AssetKind, EvaluationConfig,  # noqa: F401
                                   GateConfig, MarketConfig, RegistryConfig, SamplesConfig, TickerSpec,
                                   TrainingConfig, _Section)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = PROJECT_ROOT / "configs"


class Config(_Section):
    """Everything a run needs, in one model; saved resolved in every manifest."""

    profile: str = "cpu"
    """Name of the profile this config came from."""
    market: MarketConfig = Field(default_factory=MarketConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    @model_validator(mode="after")
    def _check_sources(self) -> "Config":
        if self.market.source == "csv" and self.market.csv_dir is None:
            raise ValueError("market.source is 'csv' but market.csv_dir is not set (use --csv-dir DIR)")
        symbols = [t.symbol for t in self.market.tickers]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"market.tickers has duplicate symbols: {symbols}")
        unknown = set(self.market.required_tickers or []) - set(symbols)
        if unknown:
            raise ValueError(f"market.required_tickers names tickers not in the universe: {sorted(unknown)}")
        return self

    def ticker(self, symbol: str) -> TickerSpec:
        """The spec of one ticker of the universe."""
        for spec in self.market.tickers:
            if spec.symbol == symbol:
                return spec
        raise KeyError(f"ticker {symbol!r} is not in the configured universe")


def _no_cuda_device() -> bool:
    """True where CUDA surely is not: Linux without an NVIDIA (or WSL2 GPU) device node. Saves a
    command that needs no torch the ~3 s of importing it to ask."""
    return sys.platform.startswith("linux") and not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))


def default_profile() -> str:
    """`gpu` where CUDA is available, else `cpu`."""
    if _no_cuda_device():
        return "cpu"
    try:
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    except ImportError:  # config is usable without torch (market data only)
        return "cpu"


def profile_path(profile: str | Path) -> Path:
    """Path of a profile given by name (`cpu`) or by path (`my.yaml`)."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    named = PROFILES_DIR / f"{profile}.yaml"
    if not named.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"unknown profile {profile!r}; known profiles: {known}")
    return named


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    section, _, field = key.rpartition(".")
    node = data
    for part in filter(None, section.split(".")):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"config override {key!r}: {part!r} is not a section")
    node[field] = value


def load_config(profile: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a profile (default: `gpu` with CUDA else `cpu`) and apply dotted overrides (every key
    given, None included: leave a key out to keep the profile's value; `tasks.overrides.merge`
    drops the flags and parameters that were not given)."""
    path = profile_path(profile or default_profile())
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile must be a YAML mapping, got {type(data).__name__}")
    data.setdefault("profile", path.stem)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return Config.model_validate(data)


def select_tickers(cfg: Config, symbols: list[str] | None) -> Config:
    """A copy of `cfg` whose universe is `symbols` (`--tickers`); specs come from the config
    when known, else the catalogue's display name (or the symbol) and a stock/index guess."""
    if not symbols:
        return cfg
    from tasks.answering.tickers import display_name

    known = {t.symbol: t for t in cfg.market.tickers}
    specs = [known.get(s) or TickerSpec(symbol=s, name=display_name(s) or s,
                                        kind="index" if s.startswith("^") else "stock") for s in symbols]
    required = [s for s in (cfg.market.required_tickers or []) if s in symbols] or None
    market = cfg.market.model_copy(update={"tickers": specs, "required_tickers": required})
    return Config.model_validate({**cfg.model_dump(), "market": market.model_dump()})


def _known_fields(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    kept = {}
    for key, value in data.items():
        info = model.model_fields.get(key)
        if info is None:
            continue
        sub = info.annotation
        kept[key] = _known_fields(sub, value) if isinstance(sub, type) and issubclass(sub, BaseModel) else value
    return kept


def recorded_config(data: dict[str, Any]) -> Config:
    """The config a manifest recorded, read by this version: fields that no longer exist are
    dropped and new fields take their defaults (an older adapter stays askable)."""
    data = _known_fields(Config, data)
    training = data.get("training") if isinstance(data, dict) else None
    if isinstance(training, dict) and training.get("fused_lora") and training.get(
            "lora_dropout", TrainingConfig.model_fields["lora_dropout"].default) > 0:
        # Recorded before that pair was refused: its layers kept peft's forward, i.e. were not fused.
        data = {**data, "training": {**training, "fused_lora": False}}
    return Config.model_validate(data)
