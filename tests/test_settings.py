"""Settings: TOML < EDGE_* < options, and a one-line error naming a bad setting."""
import subprocess

import pytest

from edge.settings import ConfigError, Settings
from tests.helpers import script


def test_layers(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[edge]\nworkers = 3\nttl_api = 5\nbackend = ["http://a:1", "http://b:2"]\n')
    s = Settings.load(str(cfg), env={"EDGE_TTL_API": "7"}, workers=4)
    assert (s.workers, s.ttl_api, s.backend) == (4, 7, ["http://a:1", "http://b:2"])


@pytest.mark.parametrize("env,needle", [
    ({"EDGE_WORKERS": "many"}, "workers"),
    ({"EDGE_ACCESS": "everyone"}, "access"),
    ({"EDGE_BACKEND": "ftp://x"}, "backend"),
    ({"EDGE_BIND": "nope"}, "bind"),
    ({"EDGE_ACCESS": "verified"}, "session_redis_url"),
    ({"EDGE_REDIS_URL": "http://x"}, "redis_url"),
])
def test_bad_values_name_the_setting(env, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.load(env=env)


def test_bad_toml_and_unknown_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(str(bad), env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("wrokers = 2")
    with pytest.raises(ConfigError, match="wrokers"):
        Settings.load(str(unknown), env={})


@pytest.mark.process
def test_cli_reports_one_line(tmp_path):
    out = subprocess.run([script("edge"), "serve", "--backend", "not-a-url"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "backend" in out.stderr
    assert "Traceback" not in out.stderr


def test_readme_documents_every_setting():
    from pathlib import Path

    from edge.cli import markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert markdown_table(Settings()) in readme, "README settings table is stale: run `edge config --markdown`"


def test_booleans_read_as_people_write_them(tmp_path):
    assert Settings.load(env={"EDGE_PURGE_WRITES": "off"}).purge_writes is False
    assert Settings.load(env={"EDGE_PURGE_WRITES": "Yes"}).purge_writes is True
    cfg = tmp_path / "edge.toml"
    cfg.write_text("purge_writes = false\n")
    assert Settings.load(str(cfg), env={}).purge_writes is False
    for bad in ({"env": {"EDGE_PURGE_WRITES": "maybe"}}, {"purge_writes": 1}):
        with pytest.raises(ConfigError, match="purge_writes must be true or false"):
            Settings.load(**bad)
