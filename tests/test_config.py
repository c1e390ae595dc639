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
