"""Settings precedence: defaults < config file < CROPMON_* environment < flags; bad settings fail up front."""

from __future__ import annotations

import pytest

from cropmon.analysis.settings import DiagnosisSettings
from cropmon.config import RunConfig, build_config
from cropmon.errors import ConfigError


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
