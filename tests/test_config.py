"""Settings precedence: defaults < config file < CROPMON_* environment < flags; bad settings fail up front."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from cropmon.api import ANALYSE_OPTIONS, AnalyseOptions, RunOptions
from cropmon.catalogue import Catalogue
from cropmon.cluster import ClusterSettings, TLSFiles
from cropmon.config import SETTINGS, TYPES, RunConfig, build_config
from cropmon.diagnosis.settings import DiagnosisSettings
from cropmon.engine.settings import EngineSettings
from cropmon.engine.zonal import TIE_BREAKS
from cropmon.errors import ConfigError
from cropmon.io.store import StorageSettings


def test_precedence(tmp_path):
    path = tmp_path / "cropmon.toml"
    path.write_text('chunk_rows = 128\nworkers = 3\nscheduler = "threads"\n[diagnosis]\nmin_agreement = 0.6\n')
    env = {"CROPMON_CHUNK_ROWS": "512", "CROPMON_SCHEDULER": "tcp://127.0.0.1:8786"}
    config = build_config({"scheduler": "local", "seed": None}, config_file=str(path), environ=env)
    assert config.chunk_rows == 512  # environment beats the file
    assert config.workers == 3  # the file beats the default
    assert config.scheduler == "local"  # a flag beats the environment
    assert config.seed == RunConfig().seed  # a flag left unset does not override
    assert config.diagnosis == DiagnosisSettings(min_agreement=0.6)  # the [diagnosis] table, typed


def test_aois_from_file_and_flags(tmp_path):
    path = tmp_path / "aois.toml"
    path.write_text('[[aoi]]\nname = "u0c"\nraster = "a.tif"\nfields = "a.gpkg"\n'
                    '[[aoi]]\nname = "u0e"\nraster = "b.tif"\nfields = "b.gpkg"\n')
    config = build_config({}, config_file=str(path), environ={})
    assert config.aois == (("u0c", "a.tif", "a.gpkg"), ("u0e", "b.tif", "b.gpkg"))
    flagged = build_config({"aois": ["x=r.tif,f.gpkg"]}, environ={})
    assert flagged.aois == (("x", "r.tif", "f.gpkg"),)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"raster": "a.tif"}, "--raster and --fields go together"),
        ({"chunk_rows": 0}, "--chunk-rows must be >= 1"),
        ({"class_band": 4}, "are the same band"),
        ({"aois": ["a=r.tif,f.gpkg", "a=s.tif,g.gpkg"]}, "AOI names repeat"),
        ({"aois": ["bad"]}, "is not NAME=RASTER,FIELDS"),
        ({"aois": ["a=r.tif,f.gpkg"], "raster": "r.tif", "fields": "f.gpkg"}, "exclude each other"),
        ({"diagnosis": {"min_agreement": 2}}, "min_agreement = 2 is invalid"),
        ({"diagnosis": {"nonsense": 1}}, "unknown diagnosis setting"),
        ({"tie_break": "median"}, "tie_break = 'median'"),
        ({"no_labels": True, "label_column": "crop"}, "--no-labels and --label-column crop exclude each other"),
        ({"no_labels": 1}, "no_labels = 1 is not true or false"),
        ({"no_labels": "maybe"}, "'maybe' is not one of"),
        ({"diagnosis": {"exclude_suspects": "no"}}, "exclude_suspects = 'no' is invalid"),
        ({"diagnosis": {"ranking_k": 0}}, "ranking_k = 0 is invalid"),
    ],
)
def test_bad_settings_fail_up_front(flags, message):
    with pytest.raises(ConfigError, match=message):
        build_config(flags, environ={})


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("chunk_rowz = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        build_config({}, config_file=str(path), environ={})


def test_tie_break_and_scratch_dir_from_file_and_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('tie_break = "lowest_id"\nscratch_dir = "/shared/scratch"\n')
    config = build_config({}, config_file=str(path), environ={})
    assert config.tie_break == "lowest_id" and config.scratch_dir == "/shared/scratch"
    assert build_config({}, environ={"CROPMON_TIE_BREAK": "lowest_id"}).tie_break == "lowest_id"
    assert build_config({}, environ={}).tie_break == "confidence" and build_config({}, environ={}).scratch_dir is None


def test_no_labels_from_file_environment_and_flag(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text("no_labels = true\n[diagnosis]\nexclude_suspects = false\nranking_k = 100\n")
    config = build_config({}, config_file=str(path), environ={})
    assert config.no_labels is True and config.diagnosis == DiagnosisSettings(exclude_suspects=False, ranking_k=100)
    for text, value in (("1", True), ("TRUE", True), ("yes", True), ("off", False), ("0", False)):
        assert build_config({}, environ={"CROPMON_NO_LABELS": text}).no_labels is value, text
    assert build_config({"no_labels": False}, config_file=str(path), environ={}).no_labels is False  # a flag wins
    assert build_config({}, environ={}).no_labels is False


# -- the objects the layers get, derived once from RunConfig --------------------------------------------------------

# A value other than the default for every setting the engine and the cluster settings carry.
CHANGED = {"chunk_rows": 64, "layer": "2022", "label_column": "crop", "no_labels": True, "class_band": 1,
           "confidence_band": 2, "tie_break": "lowest_id", "scratch_dir": "/scratch", "aoi_mask": "mask.gpkg",
           "scheduler": "threads", "workers": 3, "threads_per_worker": 2, "memory_limit": "2GiB",
           "dashboard_address": "127.0.0.1:0", "connect_timeout": 2.5, "no_worker_timeout": 5.0,
           "tls_ca_file": "ca.pem", "tls_cert": "c.pem", "tls_key": "k.pem"}


def test_engine_and_cluster_settings_default_to_runconfigs():
    config = RunConfig()
    assert config.engine_settings == EngineSettings()
    assert config.cluster_settings == ClusterSettings()


def test_every_engine_setting_comes_from_runconfig():
    """A new EngineSettings field needs its RunConfig setting of the same name (RunConfig.engine_settings copies it)."""
    config = RunConfig(**{k: v for k, v in CHANGED.items() if k in SETTINGS})
    derived = config.engine_settings
    for f in dataclasses.fields(EngineSettings):
        if f.name == "catalogue":
            continue
        assert f.name in SETTINGS and getattr(derived, f.name) == getattr(config, f.name) != f.default, f.name
    two = Catalogue.from_mapping({"wheat": ["wheat"], "rye": ["rye"]}, source="test")
    other = RunConfig(no_labels=True, classes=two).engine_settings
    assert other.no_labels and other.catalogue == two != EngineSettings().catalogue


def test_every_cluster_setting_comes_from_runconfig():
    config = RunConfig(**CHANGED, gdal=StorageSettings.from_mapping({"GDAL_CACHEMAX": "64"}, source="test"))
    derived = config.cluster_settings
    for f in dataclasses.fields(ClusterSettings):
        if f.name in ("tls", "spec", "environment"):
            continue
        assert getattr(derived, f.name) == getattr(config, f.name) != f.default, f.name
    assert derived.tls == TLSFiles("ca.pem", "c.pem", "k.pem")
    assert derived.environment == {"GDAL_CACHEMAX": "64"} and "64" not in repr(derived)


def test_the_apis_options_are_runconfig_settings_of_the_same_type():
    hints = typing.get_type_hints(AnalyseOptions)
    assert tuple(hints) == ANALYSE_OPTIONS and set(hints) <= set(SETTINGS)
    for name, kind in hints.items():
        if name != "gdal":  # the API also takes GDAL's options as a plain mapping
            assert kind == TYPES[name], name


def test_run_takes_every_runconfig_setting_typed_as_runconfig_types_it():
    hints = typing.get_type_hints(RunOptions)
    assert set(hints) | {"raster", "fields", "out"} == set(SETTINGS)
    tables = {"gdal", "classes", "aois", "diagnosis", "cluster"}  # also taken as mappings, as a config file's tables
    for name in set(hints) - tables:
        assert hints[name] == TYPES[name], name


def test_choices_are_declared_once_as_literal_types():
    assert SETTINGS["tie_break"].metadata["choices"] == typing.get_args(TYPES["tie_break"]) == TIE_BREAKS
    for name in ("progress", "outputs_via"):
        assert SETTINGS[name].metadata["choices"] == typing.get_args(TYPES[name])
    assert typing.get_args(typing.get_type_hints(EngineSettings)["tie_break"]) == TIE_BREAKS


def test_a_choice_outside_its_literal_fails_up_front(tmp_path):
    path = tmp_path / "cropmon.toml"
    path.write_text('outputs_via = "nfs"\n')
    with pytest.raises(ConfigError, match=r"outputs_via = 'nfs'.*use auto, shared, client"):
        build_config({}, config_file=str(path), environ={})
