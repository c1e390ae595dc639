"""One frozen RunConfig, from defaults < config file (TOML) < CROPMON_* environment < command-line flags.

Every setting is declared once, here: its type (the annotation), its default, and its flag's help text and group
(`setting(...)` metadata); the CLI builds its flags from these declarations and the file and environment are
coerced by the same types. The diagnosis thresholds are a typed `DiagnosisSettings` inside RunConfig (the file's
`[diagnosis]` table). Validated up front, so a bad setting fails in one line before any work.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from cropmon import errors
from cropmon.catalogue import Catalogue, as_catalogue
from cropmon.cluster import ClusterSettings, ClusterSpec, TLSFiles
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.engine.settings import TIE_BREAK_CHOICES, EngineSettings, TieBreak
from cropmon.io.store import StorageSettings, forwarded_environment

Progress = Literal["auto", "on", "off"]
OutputsVia = Literal["auto", "shared", "client"]


def setting(default: Any = None, *, help: str, group: str = "run", flag: str | None = None,
            choices: tuple[str, ...] | None = None, metavar: str | None = None,
            parse: Callable[[str], Any] | None = None) -> Any:
    """A RunConfig field with what its command-line flag needs: help text, argument group, and optionally another
    flag name, the allowed values, a metavar or a parser of the flag's text (default: the field's type)."""
    meta = {"help": help, "group": group, "flag": flag, "choices": choices, "metavar": metavar, "parse": parse}
    return field(default=default, metadata=meta)


def positive_fraction(text: str) -> float:
    """'0.0625' or '1/16' -> 0.0625; > 0."""
    num, slash, den = str(text).partition("/")
    try:
        value = float(num) / float(den) if slash else float(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{text!r} is not a number") from exc
    if value <= 0:
        raise ValueError(f"{text!r} must be > 0")
    return value


@dataclass(frozen=True)
class RunConfig:
    """Everything one `cropmon run` needs. Paths are strings as given; None = use the default."""

    raster: str | None = setting(
        group="inputs", help="prediction GeoTIFF (10 bands; class = band 3, confidence = band 4)")  # None: the twin
    fields: str | None = setting(
        group="inputs",
        help="ground-truth fields: GeoPackage, GeoParquet, FlatGeobuf, Shapefile, GeoJSON or another GDAL vector file")
    layer: str | None = setting(group="inputs", help="layer of the fields file (needed when it has several)")
    label_column: str = setting("normalized_label", group="inputs", help="ground-truth label column")
    no_labels: bool = setting(
        False, group="inputs",
        help="analyse without ground truth even where the fields carry labels: every field ranked by the model's "
        "uncertainty, fields to label spread over predicted classes and space, no accuracy (a fields file without the "
        "label column, or whose labels are all empty, is analysed so anyway)")
    class_band: int = setting(3, group="inputs", help="1-based band of the class ids")
    confidence_band: int = setting(4, group="inputs", help="1-based band of the confidence")
    classes: str | Catalogue | None = setting(
        group="inputs", metavar="FILE",
        help="the model's class list: JSON {crop: [label aliases]} (raster value = position) or CSV"
        " class_id,crop,aliases (aliases separated by ';'); default: the u0c model's 32 classes")
    aois: tuple[tuple[str, ...], ...] = setting(
        (), group="inputs", flag="--aoi", metavar="NAME=RASTER,FIELDS[,MASK]",
        help="an AOI of a multi-AOI run (repeatable), optionally with its AOI mask (see --aoi-mask); outputs go to "
        "OUT/NAME/ plus a pooled view in OUT/")
    aoi_mask: str | None = setting(
        group="inputs", metavar="FILE",
        help="polygons of the AOI (any vector format): the mapped area and the accuracy assessment count only the "
        "pixels whose centre lies inside, and the fields whose point does (default: the whole raster)")
    twin_scale: float = setting(1.0, group="inputs", parse=positive_fraction,
                                help="scale of the default twin (1 = the whole u0c cell; 1/16 for a quick look)")
    out: str | None = setting(help="output directory (default outputs/<name of the input>/)")
    scratch_dir: str | None = setting(
        group="inputs",
        help="where a fields file that cannot be read by feature id (GeoJSON, GeoParquet, FlatGeobuf without index "
        "...) is copied once as a GeoPackage, reused while the input is unchanged; every worker must see it at the "
        "same path (default: .cropmon-scratch beside the output directory)")
    scheduler: str | None = setting(
        group="cluster",
        help="tcp://HOST:PORT or tls://HOST:PORT of a running scheduler, 'local' (a LocalCluster on 127.0.0.1, the "
        "default unless DASK_SCHEDULER_ADDRESS is set) or 'threads' (in-process)")
    workers: int | None = setting(group="cluster", help="workers of the local cluster (default: cores, at most 4)")
    threads_per_worker: int | None = setting(group="cluster", help="threads per local worker (default 1)")
    memory_limit: str = setting("auto", group="cluster", help="memory limit per local worker")
    dashboard_address: str = setting("127.0.0.1:8787", group="cluster", help="local dashboard address")
    chunk_rows: int | None = setting(group="cluster", help="raster rows per task (rounded to the file's blocks)")
    profile: str | None = setting(group="cluster", metavar="FILE.html", help="write a Dask performance report")
    tls_ca_file: str | None = setting(group="cluster", help="CA certificate for a tls:// scheduler")
    tls_cert: str | None = setting(group="cluster", help="client certificate for a tls:// scheduler")
    tls_key: str | None = setting(group="cluster", help="client private key for a tls:// scheduler")
    outputs_via: OutputsVia = setting(
        "auto", group="cluster", choices=typing.get_args(OutputsVia),
        help="how the workers' output files reach the output directory: 'shared' (they write into it: a local "
        "cluster, or workers that mount it at the same path), 'client' (they send them and the client writes "
        "them: a cluster without a shared filesystem), 'auto' (shared when every worker sees the directory)")
    no_worker_timeout: float = setting(
        60.0, group="cluster", help="seconds a cluster may have no worker before the run fails (exit 3)")
    connect_timeout: float = setting(
        30.0, group="cluster",
        help="seconds a remote scheduler may take to answer (a slow network); a refused connection fails in 2 s")
    tie_break: TieBreak = setting(
        "confidence", choices=TIE_BREAK_CHOICES,
        help="how a field's tied majority is broken: 'confidence' (the tied class with the larger confidence sum, then "
        "the lowest id) or 'lowest_id' (as rasterstats does; for comparing with such tools)")
    progress: Progress = setting("auto", choices=typing.get_args(Progress), help="progress bar (auto: on a terminal)")
    seed: int = setting(0, help="seed of the active-learning selection (the plan is deterministic for a seed)")
    diagnosis: DiagnosisSettings = field(default_factory=DiagnosisSettings)  # the file's [diagnosis] table
    # The file's [gdal] table, CROPMON_GDAL_<OPTION> variables and the client's forwarded AWS_*/GDAL_*/CPL_* ...
    # variables (io/store.py): GDAL's options for every process of the run, workers that join later included.
    gdal: StorageSettings = field(default_factory=StorageSettings)
    cluster: ClusterSpec | None = None  # the file's [cluster] table: a cluster cropmon creates from its class

    def as_manifest(self) -> dict[str, Any]:
        """The settings for run.json and the report: secret storage settings redacted (never their values)."""
        out = dataclasses.asdict(dataclasses.replace(self, gdal=StorageSettings(), cluster=None))
        out["classes"] = self.catalogue().source if self.classes is not None else None
        out["gdal"] = self.gdal.as_manifest()
        out["cluster"] = self.cluster.as_manifest() if self.cluster is not None else None
        return out

    def catalogue(self) -> Catalogue:
        """The model's classes these settings name (the u0c catalogue when `classes` is unset)."""
        return as_catalogue(self.classes)

    @cached_property
    def engine_settings(self) -> EngineSettings:
        """What the engine needs of these settings: each EngineSettings field is the setting of the same name
        (`catalogue`: the one `classes` names), so a new engine setting is a RunConfig field and its EngineSettings
        field, no copying line. An AOI of a multi-AOI run replaces `aoi_mask`; a run puts its default scratch
        directory in `scratch_dir` (pipeline.scratch_dir_for)."""
        same = {f.name: getattr(self, f.name) for f in dataclasses.fields(EngineSettings) if f.name != "catalogue"}
        return EngineSettings(**same, catalogue=self.catalogue())

    @cached_property
    def cluster_settings(self) -> ClusterSettings:
        """Which cluster these settings choose and how to connect to it: each ClusterSettings field is the setting of
        the same name, but the TLS files (three settings), `spec` (the [cluster] table) and `environment` (the
        storage settings, set on every worker)."""
        derived: dict[str, Any] = {"tls": TLSFiles(self.tls_ca_file, self.tls_cert, self.tls_key), "spec": self.cluster,
                                   "environment": self.gdal.as_dict()}
        same = {f.name: getattr(self, f.name) for f in dataclasses.fields(ClusterSettings) if f.name not in derived}
        return ClusterSettings(**same, **derived)


SETTINGS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}
TYPES: dict[str, Any] = typing.get_type_hints(RunConfig)
FLAG_SETTINGS: tuple[str, ...] = tuple(name for name, f in SETTINGS.items() if "help" in f.metadata)


def scalar_type(name: str) -> type:
    """bool, int, float or str: the type a setting's text is read as (from its annotation, None removed; a Literal:
    the type of its choices)."""
    if typing.get_origin(TYPES[name]) is Literal:
        return type(typing.get_args(TYPES[name])[0])
    kinds = [t for t in typing.get_args(TYPES[name]) or (TYPES[name],) if t is not type(None)]
    return kinds[0] if kinds and kinds[0] in (bool, int, float, str) else str


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(text: str) -> bool:
    """'true'/'1'/'yes'/'on' -> True, 'false'/'0'/'no'/'off' -> False (any case): a switch in the environment."""
    word = str(text).strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ValueError(f"{text!r} is not one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def flag_name(name: str) -> str:
    return SETTINGS[name].metadata.get("flag") or f"--{name.replace('_', '-')}"


def _coerce(name: str, value: Any, source: str) -> Any:
    """A setting's value from a file, the environment or a flag, as RunConfig declares it."""
    if value is None:
        return None
    if name == "aois":
        return tuple(parse_aoi(item, source) for item in value)
    if name == "classes":
        if isinstance(value, Catalogue):
            return value
        if isinstance(value, dict):  # a TOML table {crop = [aliases]}
            return Catalogue.from_mapping(value, source=f"{source} [classes]", path=source)
        return str(value)
    if name == "gdal":
        if isinstance(value, StorageSettings):
            return value
        if not isinstance(value, dict):
            raise errors.ConfigError(f"{source}: [gdal] must be a table of GDAL options",
                                     fix='e.g. [gdal] AWS_S3_ENDPOINT = "minio:9000"')
        return StorageSettings.from_mapping(value, source=f"{source} [gdal]")
    if name == "cluster":
        return ClusterSpec.from_mapping(value, source=source)
    if name == "diagnosis":
        if isinstance(value, DiagnosisSettings):
            return value
        if not isinstance(value, dict):
            raise errors.ConfigError(f"{source}: [diagnosis] must be a table", fix="see README, Configuration")
        return DiagnosisSettings.from_mapping(value)
    custom = SETTINGS[name].metadata.get("parse")
    kind = scalar_type(name)
    if kind is bool:
        custom = custom or parse_bool
    what = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a text")
    if not isinstance(value, str) and not _is_a(value, float if custom and kind is not bool else kind):
        # A typed value (a TOML file, an API argument) must be of the setting's type: 2.5 is no row count, true
        # no number of workers, a list no text. Text (a flag, an environment variable) is parsed below.
        raise errors.ConfigError(f"{source}: {name} = {value!r} is not {what}",
                                 fix=f"give {name} {what}" + (' (in quotes in TOML: "...")' if kind is str else ""))
    try:
        return (custom or kind)(value)
    except (TypeError, ValueError) as exc:
        problem = str(exc) if custom else f"{name} = {value!r} is not {what}"
        raise errors.ConfigError(f"{source}: {problem}", fix=f"give {name} {what}") from exc


def _is_a(value: Any, kind: type) -> bool:
    """bool: a bool; int: an integer (numpy's too), not a bool; float: any real number, not a bool; str: a str."""
    if kind is bool or isinstance(value, bool):
        return isinstance(value, bool) and kind is bool
    abstract: dict[type, type] = {int: numbers.Integral, float: numbers.Real}
    return isinstance(value, abstract.get(kind, kind))


def parse_aoi(item: Any, source: str) -> tuple[str, ...]:
    """An AOI from `NAME=RASTER,FIELDS[,MASK]` (flag) or a {name, raster, fields[, mask]} table (config file):
    (name, raster, fields), with its AOI mask as a fourth item when it has one (`aoi_parts` reads either)."""
    if isinstance(item, dict):
        missing = [k for k in ("name", "raster", "fields") if not item.get(k)]
        if missing:
            raise errors.ConfigError(
                f"{source}: an [[aoi]] lacks {', '.join(missing)}", fix="give each [[aoi]] a name, raster and fields"
            )
        wrong = [k for k in ("name", "raster", "fields", "mask") if k in item and not isinstance(item[k], str)]
        if wrong:
            raise errors.ConfigError(f"{source}: an [[aoi]]'s {', '.join(wrong)} is not a text",
                                     fix='give name, raster, fields (and mask) as text (in quotes: "...")')
        parts = [item["name"], item["raster"], item["fields"]]
        return (*parts, item["mask"]) if item.get("mask") else tuple(parts)
    if isinstance(item, tuple | list) and len(item) in (3, 4):
        values = [v for v in item if v is not None]
        if len(values) < 3 or not all(isinstance(v, str | Path) for v in values):
            raise errors.ConfigError(f"{source}: the AOI {item!r} is not three or four texts",
                                     fix="give (NAME, RASTER, FIELDS[, MASK])")
        return tuple(str(v) for v in values)
    if not isinstance(item, str):
        raise errors.ConfigError(f"{source}: {item!r} is not NAME=RASTER,FIELDS[,MASK]",
                                 fix="e.g. --aoi u0c=u0c.tif,u0c.gpkg")
    name, sep, paths = str(item).partition("=")
    raster, comma, rest = paths.partition(",")
    fields, _, mask = rest.partition(",")
    if not (sep and comma and name and raster and fields):
        raise errors.ConfigError(f"{source}: {item!r} is not NAME=RASTER,FIELDS[,MASK]",
                                 fix="e.g. --aoi u0c=u0c.tif,u0c.gpkg (or u0c=u0c.tif,u0c.gpkg,u0c_mask.gpkg)")
    texts = (name.strip(), raster.strip(), fields.strip())
    return (*texts, mask.strip()) if mask.strip() else texts


def aoi_parts(aoi: tuple[str, ...]) -> tuple[str, str, str, str | None]:
    """(name, raster, fields, mask or None) of one of RunConfig.aois."""
    name, raster, fields, *mask = aoi
    return name, raster, fields, (mask[0] if mask else None)


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
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise errors.ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}", fix=f"known settings: {', '.join(sorted(SETTINGS))}"
        )
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


GDAL_PREFIX = "CROPMON_GDAL_"


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """CROPMON_<SETTING> variables, e.g. CROPMON_RASTER, CROPMON_CHUNK_ROWS; CROPMON_GDAL_<OPTION> sets a GDAL
    option (CROPMON_GDAL_AWS_S3_ENDPOINT=host:9000)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name in SETTINGS:
        key = f"CROPMON_{name.upper()}"
        if name not in ("diagnosis", "aois", "gdal", "cluster") and env.get(key):
            out[name] = _coerce(name, env[key], key)
    gdal = {k.removeprefix(GDAL_PREFIX): v for k, v in env.items() if k.startswith(GDAL_PREFIX) and v}
    if gdal:
        out["gdal"] = StorageSettings.from_mapping(gdal, source="CROPMON_GDAL_* variables")
    return out


def build_config(
    flags: dict[str, Any], *, config_file: str | None = None, environ: dict[str, str] | None = None
) -> RunConfig:
    """Merge defaults < file < environment < flags (flags that are None do not override) and validate."""
    # Storage settings merge option by option: the client's forwarded variables < [gdal] < CROPMON_GDAL_* < gdal=.
    gdal = forwarded_environment(os.environ if environ is None else environ)
    merged: dict[str, Any] = {}
    for layer in (read_config_file(config_file) if config_file else {}, from_environment(environ),
                  {k: _coerce(k, v, flag_name(k)) for k, v in flags.items() if v is not None}):
        gdal = gdal.merged(layer.pop("gdal", StorageSettings()))
        merged.update(layer)
    config = RunConfig(**merged, gdal=gdal)
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    if config.aois:
        if config.raster or config.fields:
            raise errors.ConfigError("--aoi and --raster/--fields exclude each other", fix="list every AOI with --aoi")
        if config.aoi_mask:
            raise errors.ConfigError("--aoi-mask and --aoi exclude each other",
                                     fix="give each AOI its own mask: --aoi NAME=RASTER,FIELDS,MASK")
        names = [aoi_parts(aoi)[0] for aoi in config.aois]
        if len(set(names)) != len(names):
            raise errors.ConfigError(f"AOI names repeat: {', '.join(names)}", fix="give every --aoi its own NAME")
        bad = [n for n in names if not n.replace("-", "").replace("_", "").replace(".", "").isalnum()
               or n.startswith(".")]
        if bad:
            raise errors.ConfigError(f"AOI name(s) {', '.join(bad)} are not usable as folder names",
                                     fix="use letters, digits, '-', '_' and '.' (not first: a hidden name)")
        from cropmon.io.outputs import reserved_names

        taken = [n for n in names if n.casefold() in {r.casefold() for r in reserved_names()}]
        if taken:
            raise errors.ConfigError(
                f"AOI name(s) {', '.join(taken)} are names of the pooled outputs beside the AOIs' folders",
                fix=f"name the AOIs otherwise (taken: {', '.join(reserved_names())})")
    if config.no_labels and config.label_column != SETTINGS["label_column"].default:
        raise errors.ConfigError(f"--no-labels and --label-column {config.label_column} exclude each other",
                                 fix="drop one: --no-labels reads no label column")
    if (config.raster is None) != (config.fields is None):
        raise errors.ConfigError(
            "--raster and --fields go together", fix="pass both (or neither, to analyse the digital twin)"
        )
    for name in ("class_band", "confidence_band"):
        if getattr(config, name) < 1:
            raise errors.ConfigError(f"{flag_name(name)} must be >= 1 (bands are numbered from 1)")
    if config.class_band == config.confidence_band:
        raise errors.ConfigError("--class-band and --confidence-band are the same band", fix="pass two bands")
    for name in ("workers", "threads_per_worker", "chunk_rows"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise errors.ConfigError(f"{flag_name(name)} must be >= 1, got {value}")
    for name in FLAG_SETTINGS:
        choices = SETTINGS[name].metadata["choices"]
        if choices and getattr(config, name) not in choices:
            raise errors.ConfigError(f"{name} = {getattr(config, name)!r}", fix=f"use {', '.join(choices)}")
    if config.twin_scale <= 0:
        raise errors.ConfigError("twin_scale must be > 0")
    if config.cluster is not None:
        if config.scheduler is not None:
            raise errors.ConfigError(f"[cluster] ({config.cluster.class_path}) and --scheduler {config.scheduler} "
                                     "exclude each other", fix="drop one of them")
        config.cluster.load()  # an unknown class or arguments it does not take fail here, before any work
    config.catalogue()  # a bad class list fails here, before any work
