"""LiteLLM's proxy as the benchmark's path "litellm": the config it is given, and its
virtualenv of its own, found or made once per pinned version."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.litellm_proxy import REQUIREMENTS, install, proxy_config, requirements, venv_dir

pytestmark = pytest.mark.unit

PINS = "# the proxy\nlitellm[proxy]==1.2.3  # pinned\n\n"


def test_config_routes_the_model_to_the_fake_server_as_an_openai_compatible_one() -> None:
    config = yaml.safe_load(yaml.safe_dump(proxy_config("http://127.0.0.1:4321", "fake-model")))
    (entry,) = config["model_list"]
    assert entry["model_name"] == "fake-model"  # the name the benchmark's chat body asks for
    # LiteLLM's OpenAI provider appends /chat/completions to api_base: without /v1 every call is a 404.
    assert entry["litellm_params"]["model"] == "openai/fake-model"
    assert entry["litellm_params"]["api_base"] == "http://127.0.0.1:4321/v1"


def test_config_has_no_database_key_or_callbacks_to_slow_the_proxy() -> None:
    config = proxy_config("http://127.0.0.1:4321", "fake-model")
    settings = {**config["general_settings"], **config["litellm_settings"], **config["router_settings"]}
    assert not {"database_url", "master_key", "callbacks", "success_callback", "failure_callback", "cache"} & set(
        settings
    )
    assert config["litellm_settings"]["telemetry"] is False
    # Without a master key the proxy refuses to start unless told that this is meant.
    assert config["general_settings"]["dangerously_permit_weak_or_unset_master_key"] is True
    assert "num_retries" not in settings and "fallbacks" not in settings  # one try, as the gateway's path


def test_the_pinned_requirement_is_litellms_proxy_at_one_version() -> None:
    (pin,) = requirements(REQUIREMENTS.read_text())
    assert pin.startswith("litellm[proxy]==")


def test_venv_is_one_per_pinned_content_in_the_user_cache(tmp_path: Path) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    folder = venv_dir(PINS, environ)
    assert folder.parent == tmp_path / "llm-api-bench"
    assert folder.name.startswith("litellm-1.2.3-")
    assert venv_dir("litellm[proxy]==1.2.3\n", environ) == folder  # comments and blanks change nothing
    assert venv_dir("litellm[proxy]==1.2.4\n", environ) != folder  # a new pin, a new virtualenv


def test_a_named_venv_wins(tmp_path: Path) -> None:
    assert venv_dir(PINS, {"BENCH_LITELLM_VENV": str(tmp_path / "mine"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "mine"


def test_an_installed_venv_is_used_as_it_is(tmp_path: Path) -> None:
    pins = tmp_path / "pins.txt"
    pins.write_text(PINS)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "litellm").write_text("")
    (venv / "bench-installed.txt").write_text(PINS)
    # A python that cannot make a virtualenv: nothing is made again.
    assert install(venv, tmp_path / "log", pins, python="/bin/false") == venv / "bin" / "litellm"


def test_a_failed_install_skips_the_path_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pins = tmp_path / "pins.txt"
    pins.write_text(PINS)
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bench-installed.txt").write_text("litellm[proxy]==1.0.0\n")  # another pin's install: made again
    assert install(venv, tmp_path / "install.log", pins, python="/bin/false") is None
    said = capsys.readouterr().out
    assert "litellm: skipped" in said and "litellm[proxy]==1.2.3" in said and str(tmp_path / "install.log") in said
    assert not (venv / "bench-installed.txt").exists()  # not taken for installed next time
