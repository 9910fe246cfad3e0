"""`bench sim` flags that mirror OMERO.web settings: omero.web.thumbnails_batch, use_x_forwarded_host,
secure_proxy_ssl_header (API v0 links: `request.build_absolute_uri`, omeroweb/api/views.py:45-64)."""
from __future__ import annotations

import httpx

from tests.helpers import sim_fixtures

sim, anon = sim_fixtures("--thumbnails-batch", "3", "--use-x-forwarded-host",
                         "--secure-proxy-ssl-header", "X-Forwarded-Proto:https")
default_sim, _ = sim_fixtures()


def test_batch_limit_is_the_site_setting(anon, sim):
    ids = sim.info["public_images"][:4]
    over = anon.get("/webgateway/get_thumbnails/", params=[("id", i) for i in ids])
    assert (over.status_code, over.text, over.headers["content-type"]) == (500, "Max 3 thumbnails at a time.",
                                                                          "text/javascript")
    assert anon.get("/webclient/get_thumbnails/", params=[("id", i) for i in ids]).text == over.text
    assert len(anon.get("/webgateway/get_thumbnails/", params=[("id", i) for i in ids[:3]]).json()) == 3
    assert sim.info["thumbnails_batch"] == 3 and "const BATCH = 3;" in anon.get("/plates/").text
    assert sim.info["use_x_forwarded_host"] is True
    assert sim.info["secure_proxy_ssl_header"] == ["x-forwarded-proto", "https"]


def links(url: str, **headers: str) -> str:
    return httpx.get(f"{url}/api/", headers=headers).json()["data"][0]["url:base"]


def test_forwarded_headers_are_trusted_only_when_configured(sim, default_sim):
    forwarded = {"X-Forwarded-Host": "images.example.org", "X-Forwarded-Proto": "https"}
    assert links(sim.url, **forwarded) == "https://images.example.org/api/v0/"
    assert links(sim.url, **{"X-Forwarded-Host": "images.example.org", "X-Forwarded-Proto": "http"}) \
        == "http://images.example.org/api/v0/"
    assert links(sim.url, **{"X-Forwarded-Proto": "https, http"}) == f"https://{sim.url.split('//')[1]}/api/v0/"
    assert links(sim.url) == f"{sim.url}/api/v0/"
    assert links(default_sim.url, **forwarded) == f"{default_sim.url}/api/v0/"
    one = httpx.get(f"{sim.url}/api/v0/m/screens/", headers=forwarded).json()["data"][0]
    assert one["url:screen"].startswith("https://images.example.org/api/v0/m/screens/")
