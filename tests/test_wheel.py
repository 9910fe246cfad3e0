"""A wheel carries everything (issue 11): installed from it, with only the base dependencies,
every console script runs.

The wheel is built from a copy of the source tree (nothing is written into the checkout) with
the project venv's setuptools, then installed without its dependencies into a fresh venv. A
`.pth` file there adds a directory of links to the distributions the wheel's base requirements
pull in, taken from the project venv: no network, and no extra (trustme, matplotlib, psycopg)
for the scripts to lean on by accident. Everything runs from an empty cwd without PYTHONPATH,
so the source tree is never on sys.path.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT, Proc, free_port
from tests.test_nginx import NGINX, USER, nginx_t

pytestmark = pytest.mark.process
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".hypothesis", ".cache", "demo-cache")


@dataclass(frozen=True)
class Installed:
    bin: Path
    site: Path
    cwd: Path

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / script), *args], capture_output=True, text=True, timeout=60)


def _check(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, timeout=120).stdout


def _needed(requires: list[str] | None, extras: frozenset[str]) -> list[Requirement]:
    """The requirements that apply without an extra, or with one of `extras`."""
    reqs = [Requirement(text) for text in requires or ()]
    return [r for r in reqs if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""})]


def link_base_dependencies(wheel: metadata.Distribution, view: Path) -> None:
    """Links in `view` to each top-level file of the installed distributions that `wheel`'s base
    requirements pull in, transitively (with the extras they ask of each other, e.g. httpx[http2])."""
    view.mkdir()
    todo, seen = _needed(wheel.requires, frozenset()), set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        todo += _needed(dist.requires, frozenset(req.extras))
        for top in {f.parts[0] for f in dist.files or ()} - {"..", "__pycache__"}:
            if not (view / top).exists():
                (view / top).symlink_to(dist.locate_file(top))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=NOT_SOURCE)
    _check(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist",
           tmp / "src")
    _check(sys.executable, "-m", "venv", "--without-pip", tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    _check(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
           *(tmp / "dist").glob("omero_edge-*.whl"))
    site = Path(_check(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    link_base_dependencies(next(metadata.distributions(path=[str(site)])), tmp / "deps")
    (site / "omero-edge-base-deps.pth").write_text(f"{tmp / 'deps'}\n")
    (tmp / "cwd").mkdir()
    return Installed(python.parent, site, tmp / "cwd")


@pytest.fixture(autouse=True)
def away_from_the_source(installed: Installed, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m` and `-c` put the cwd first on sys.path: never the checkout."""
    monkeypatch.chdir(installed.cwd)
    monkeypatch.delenv("PYTHONPATH", raising=False)


def test_packages_and_data_come_from_the_wheel(installed: Installed) -> None:
    probe = ("import importlib.util, edge, edge.pages, warm, bench, bench.browser; "
             "print(edge.__file__, warm.__file__, bench.__file__, edge.pages.DEMO_PAGE, bench.browser.PAGE); "
             "print(*(importlib.util.find_spec(m) for m in ('trustme', 'matplotlib', 'psycopg')))")
    files, extras = installed.run("python", "-c", probe).stdout.splitlines()
    assert all(Path(f).is_relative_to(installed.site) and Path(f).is_file() for f in files.split()), files
    assert files.split()[-2:] == [str(installed.site / "edge" / "static" / "demo.html"),
                                  str(installed.site / "bench" / "static" / "plate.html")]
    assert extras == "None None None"


def test_edge_nginx_conf(installed: Installed, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    result = installed.run("edge", "nginx-conf", "--prefix", str(tmp_path), "--listen", "127.0.0.1:18080", *USER,
                           "-o", str(conf))
    assert result.returncode == 0, result.stderr
    assert "error_page 502 503 504 = @omero_edge_web;" in conf.read_text()
    if NGINX:
        nginx_t(tmp_path, conf)


def test_bench_sim_serves(installed: Installed) -> None:
    port = free_port()
    sim = Proc([str(installed.bin / "bench"), "sim", "--port", str(port), "--speed", "0"], name="wheel-sim")
    try:
        sim.wait_http(f"http://127.0.0.1:{port}/api/v0/")
        resp = httpx.get(f"http://127.0.0.1:{port}/api/v0/", timeout=5)
        assert resp.status_code == 200 and "url:images" in resp.json(), resp.text
    finally:
        sim.stop()


@pytest.mark.parametrize("argv", [["warm", "--help"], ["bench", "plate-384", "--help"]])
def test_help(installed: Installed, argv: list[str]) -> None:
    result = installed.run(*argv)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


@pytest.mark.parametrize("argv, extra", [
    (["bench", "plate-384", "--targets", "direct"], "bench"),
    (["warm", "plate", "1", "--dry-run", "--db", "postgresql://127.0.0.1:1/omero"], "db"),
])
def test_a_missing_extra_is_named(installed: Installed, argv: list[str], extra: str) -> None:
    result = installed.run(*argv)
    assert result.returncode == 1 and f"pip install 'omero-edge[{extra}]'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
