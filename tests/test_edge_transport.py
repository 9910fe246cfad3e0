"""HTTP/2 end to end: httpx with h2, curl prior knowledge, TLS with ALPN; both ASGI servers."""
from __future__ import annotations

import ssl
import subprocess
import tempfile

import httpx
import pytest
import trustme

from tests.helpers import Sim, wait_until

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def certs():
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tempfile.mkdtemp(prefix="edge-tls-")
    cert.private_key_pem.write_to_path(f"{d}/key.pem")  # PKCS#8, as granian wants
    cert.cert_chain_pems[0].write_to_path(f"{d}/cert.pem")
    ca.cert_pem.write_to_path(f"{d}/ca.pem")
    return d


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_h2c_prior_knowledge(sim: Sim, edges, server):
    edge = edges(server=server)
    iid = sim.info["public_images"][0]
    with httpx.Client(http1=False, http2=True, base_url=edge.url) as client:
        r1 = client.get(f"/webgateway/render_thumbnail/{iid}/")
        r2 = client.get(f"/webgateway/render_thumbnail/{iid}/")
        head = client.head(f"/webgateway/render_thumbnail/{iid}/")
    assert r1.http_version == r2.http_version == "HTTP/2"
    assert r1.content == r2.content and r2.headers["x-edge-cache"] == "HIT"
    assert head.status_code == 200 and head.content == b""
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          f"{edge.url}/webgateway/render_thumbnail/{iid}/"], capture_output=True, text=True, timeout=20)
    assert out.stdout == "2 200"
    head = subprocess.run(["curl", "-s", "-I", "--http2-prior-knowledge", f"{edge.url}/webgateway/render_thumbnail/{iid}/"],
                          capture_output=True, text=True, timeout=20)
    assert head.returncode == 0 and "x-edge-cache: HIT" in head.stdout


@pytest.mark.parametrize("server", ["granian", "hypercorn"])
def test_tls_alpn_h2_and_http11_fallback(sim: Sim, edges, certs, server):
    edge = edges(server=server, tls=(f"{certs}/cert.pem", f"{certs}/key.pem"))
    iid = sim.info["public_images"][1]

    def first_answer() -> httpx.Response | None:
        try:
            with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=f"{certs}/ca.pem"), base_url=edge.url) as client:
                return client.get(f"/webgateway/render_thumbnail/{iid}/")
        except httpx.ConnectError:
            return None

    r = wait_until(first_answer, 15, 0.2, message="the TLS edge never accepted a connection")
    assert r.http_version == "HTTP/2" and r.status_code == 200
    with httpx.Client(http2=False, verify=ssl.create_default_context(cafile=f"{certs}/ca.pem"), base_url=edge.url) as client:
        r11 = client.get(f"/webgateway/render_thumbnail/{iid}/")
    assert r11.http_version == "HTTP/1.1" and r11.headers["x-edge-cache"] == "HIT" and r11.content == r.content
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", f"{certs}/ca.pem", "-o", "/dev/null", "-w",
                          "%{http_version}", f"{edge.url}/webgateway/render_thumbnail/{iid}/"],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout == "2"
