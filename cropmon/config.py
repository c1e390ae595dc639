"""One frozen RunConfig, from defaults < config file (TOML) < CROPMON_* environment < command-line flags.

Validated up front, so a bad setting fails in one line before any work.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cropmon import errors


@dataclass(frozen=True)
class RunConfig:
    """Everything one `cropmon run` needs. Paths are strings as given; None = use the default."""

    raster: str | None = None  # None (with fields None) = the digital twin
    fields: str | None = None
    out: str | None = None  # default: outputs/<name of the input>/
    layer: str | None = None
    label_column: str = "normalized_label"
    class_band: int = 3
    confidence_band: int = 4
    scheduler: str | None = None  # ADDRESS | local | threads; None = DASK_SCHEDULER_ADDRESS, else local
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    chunk_rows: int | None = None
    profile: str | None = None  # write a Dask performance report (HTML) here
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    progress: str = "auto"  # auto (bar on a terminal) | on | off
    no_worker_timeout: float = 60.0
    seed: int = 0  # field selection (active learning) is deterministic for a seed
    twin_scale: float = 1.0  # scale of the default twin when no inputs are given
    diagnosis: dict[str, Any] = field(default_factory=dict)  # DiagnosisSettings overrides ([diagnosis] table)
    aois: tuple[tuple[str, str, str], ...] = ()  # (name, raster, fields): several AOIs in one run

    def as_manifest(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_INT = {"class_band", "confidence_band", "workers", "threads_per_worker", "chunk_rows", "seed"}
_FLOAT = {"no_worker_timeout", "twin_scale"}


def _coerce(name: str, value: Any, source: str) -> Any:
    if value is None:
        return None
    try:
        if name in _INT:
            return int(value)
        if name in _FLOAT:
            return float(value)
    except (TypeError, ValueError) as exc:
        raise errors.ConfigError(f"{source}: {name} = {value!r} is not a number", fix=f"give {name} a number") from exc
    if name == "aois":
        return tuple(parse_aoi(item, source) for item in value)
    if name == "diagnosis":
        if not isinstance(value, dict):
            raise errors.ConfigError(f"{source}: [diagnosis] must be a table", fix="see README, Configuration")
        return dict(value)
    return str(value) if not isinstance(value, str) else value


def parse_aoi(item: Any, source: str) -> tuple[str, str, str]:
    """An AOI from `NAME=RASTER,FIELDS` (flag) or a {name, raster, fields} table (config file)."""
    if isinstance(item, dict):
        missing = [k for k in ("name", "raster", "fields") if not item.get(k)]
        if missing:
            raise errors.ConfigError(
                f"{source}: an [[aoi]] lacks {', '.join(missing)}", fix="give each [[aoi]] a name, raster and fields"
            )
        return str(item["name"]), str(item["raster"]), str(item["fields"])
    if isinstance(item, tuple | list) and len(item) == 3:
        return tuple(str(v) for v in item)  # type: ignore[return-value]
    name, sep, paths = str(item).partition("=")
    raster, comma, fields = paths.partition(",")
    if not (sep and comma and name and raster and fields):
        raise errors.ConfigError(f"{source}: {item!r} is not NAME=RASTER,FIELDS", fix="e.g. --aoi u0c=u0c.tif,u0c.gpkg")
    return name.strip(), raster.strip(), fields.strip()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys (or a [cropmon] table) named like RunConfig's fields."""
    path = Path(path)
    if not path.is_file():
        raise errors.MissingFile("config file does not exist", path=path, fix="check --config")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"{path}: not valid TOML ({exc})", fix="fix the file's syntax") from exc
    data = data.get("cropmon", data)
    if "aoi" in data:
        data["aois"] = data.pop("aoi")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise errors.ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}", fix=f"known settings: {', '.join(sorted(_FIELDS))}"
        )
    return {k: _coerce(k, v, str(path)) for k, v in data.items() if k in _FIELDS}


def from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """CROPMON_<SETTING> variables, e.g. CROPMON_RASTER, CROPMON_CHUNK_ROWS."""
    environ = os.environ if environ is None else environ
    out = {}
    for name in _FIELDS:
        key = f"CROPMON_{name.upper()}"
        if name not in ("diagnosis", "aois") and environ.get(key):
            out[name] = _coerce(name, environ[key], key)
    return out


def build_config(
    flags: dict[str, Any], *, config_file: str | None = None, environ: dict[str, str] | None = None
) -> RunConfig:
    """Merge defaults < file < environment < flags (flags that are None do not override) and validate."""
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(read_config_file(config_file))
    merged.update(from_environment(environ))
    merged.update({k: _coerce(k, v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v is not None})
    config = RunConfig(**merged)
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    if config.aois:
        if config.raster or config.fields:
            raise errors.ConfigError("--aoi and --raster/--fields exclude each other", fix="list every AOI with --aoi")
        names = [name for name, _, _ in config.aois]
        if len(set(names)) != len(names):
            raise errors.ConfigError(f"AOI names repeat: {', '.join(names)}", fix="give every --aoi its own NAME")
        bad = [n for n in names if not n.replace("-", "").replace("_", "").replace(".", "").isalnum()]
        if bad:
            raise errors.ConfigError(f"AOI name(s) {', '.join(bad)} are not usable as folder names",
                                     fix="use letters, digits, '-', '_' and '.'")
    if (config.raster is None) != (config.fields is None):
        raise errors.ConfigError(
            "--raster and --fields go together", fix="pass both (or neither, to analyse the digital twin)"
        )
    for name in ("class_band", "confidence_band"):
        if getattr(config, name) < 1:
            raise errors.ConfigError(f"--{name.replace('_', '-')} must be >= 1 (bands are numbered from 1)")
    if config.class_band == config.confidence_band:
        raise errors.ConfigError("--class-band and --confidence-band are the same band", fix="pass two bands")
    for name in ("workers", "threads_per_worker", "chunk_rows"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise errors.ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if config.progress not in {"auto", "on", "off"}:
        raise errors.ConfigError(f"progress = {config.progress!r}", fix="use auto, on or off")
    if config.twin_scale <= 0:
        raise errors.ConfigError("twin_scale must be > 0")
    from cropmon.diagnose import DiagnosisSettings

    DiagnosisSettings.from_mapping(config.diagnosis)  # thresholds fail here, before any work
