"""The iofuzz section of avocado's settings: registered, shown, applied under the cfg."""

from __future__ import annotations

from avocado.core.settings import Settings

from avocado_iofuzz.plugins.settings import SETTINGS, apply_settings, register
from avocado_iofuzz.vt.iofuzz_params import IofuzzParams


def _registered() -> dict:
    settings = Settings()
    register(settings)
    register(settings)  # twice: avocado may initialise plugins more than once
    return settings.as_dict()


def test_every_setting_is_registered_under_iofuzz():
    registered = _registered()
    for setting in SETTINGS:
        assert registered[f"iofuzz.{setting.key}"] == setting.default


def test_registered_defaults_are_the_params_defaults():
    params = {}
    apply_settings(_registered(), params)
    from_settings = IofuzzParams.from_params(params)
    assert from_settings == IofuzzParams.from_params({})


def test_cfg_value_wins_over_the_setting_and_empty_cfg_value_takes_it():
    config = {"iofuzz.hang_timeout": "45", "iofuzz.accel": "tcg"}
    params = {"hang_timeout": "60", "iofuzz_accel": ""}
    apply_settings(config, params)
    assert params["hang_timeout"] == "60" and params["iofuzz_accel"] == "tcg"
    assert params["report_every"] == "16384"  # absent from config: the registered default


def test_a_bad_value_from_avocado_conf_is_named_like_any_param():
    import pytest

    from avocado_iofuzz.vt.iofuzz_params import ParamError

    params = {}
    apply_settings({"iofuzz.max_hangs": "many"}, params)
    with pytest.raises(ParamError, match="param max_hangs = 'many': not an integer"):
        IofuzzParams.from_params(params)
