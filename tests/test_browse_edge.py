"""The webclient's browsing through a real edge (issue 18.1-2, docs/browse.md): what is never cached stays
a pass-through whose cookies reach the client as OMERO.web set them; what is cached carries no cookie,
is shared by anonymous visitors, never stores a comment form, and goes with a purge of any object it
shows (tags from path, query and body)."""
from __future__ import annotations

from contextlib import closing

import httpx
import pytest

from tests.helpers import Sim
from tests.helpers.launch import PURGE_TOKEN

pytestmark = pytest.mark.process

NEVER_GET = ["/webclient/?experimenter=-1", "/webclient/userdata/", "/webclient/usertags/", "/webclient/public/",
             "/webclient/history/", "/webclient/search/", "/webclient/help/", "/webclient/login/",
             "/webclient/keepalive_ping/", "/webclient/activities/", "/webclient/activities_json/",
             "/webgateway/getImgRDef/", "/api/v0/token/", "/webclient/active_group/?active_group=3"]


def cookies_of(response: httpx.Response) -> list[tuple[str, str]]:
    """Every Set-Cookie as (name, value and attributes), in order."""
    return [tuple(v.split("=", 1)) for k, v in response.headers.multi_items() if k == "set-cookie"]


@pytest.mark.parametrize("path", NEVER_GET)
def test_session_pages_pass_through_with_their_cookies(sim: Sim, edge, path: str):
    """As a logged-in user (their session and CSRF cookie sent): BYPASS, and the answer's Set-Cookie lines
    are the backend's own to the same request."""
    with closing(sim.login("alice")) as session:
        jar = dict(session.cookies)
    via_edge = httpx.get(edge.url + path, cookies=jar, timeout=15)
    direct = httpx.get(sim.url + path, cookies=jar, timeout=15)
    assert via_edge.headers["x-edge-cache"] == "BYPASS"
    assert via_edge.status_code == direct.status_code, (path, via_edge.status_code, direct.status_code)
    assert cookies_of(via_edge) == cookies_of(direct) and (path != "/api/v0/token/" or cookies_of(direct))


def test_anonymous_page_hands_out_the_session_unchanged(sim: Sim, edge):
    """OMERO.web logs an anonymous visitor in as the public user: that session cookie is theirs to keep."""
    via_edge = httpx.get(edge.url + "/webclient/?experimenter=-1", timeout=15)
    assert via_edge.headers["x-edge-cache"] == "BYPASS"
    names = [name for name, _ in cookies_of(via_edge)]
    assert sim.info["session_cookie"] in names, names
    assert b"WEBCLIENT.active_group_id" in via_edge.content


def test_writes_and_logins_pass_through(sim: Sim, edge):
    with httpx.Client(base_url=edge.url, timeout=15) as client:
        page = client.get("/webclient/login/")
        token = client.cookies["csrftoken"]
        login = client.post("/webclient/login/", data={"csrfmiddlewaretoken": token, "username": "alice",
                                                       "password": sim.password("alice"), "server": "1"})
        assert (page.headers["x-edge-cache"], login.headers["x-edge-cache"]) == ("BYPASS", "BYPASS")
        assert login.status_code == 302 and sim.info["session_cookie"] in dict(cookies_of(login))


def test_cached_answers_are_shared_carry_no_cookie_and_follow_purges(sim: Sim, edge):
    dataset = next(d for d in sim.info["datasets"] if d["public"] and d["project"] is not None)
    image, other = dataset["first_image"], dataset["first_image"] + 1
    group = sim.info["public_user"]["active_group"]
    shows_image = [f"/webclient/api/annotations/?type=map&parents=true&image={image}",
                   f"/webclient/metadata_details/image/{image}/",
                   f"/webclient/api/images/?id={dataset['id']}&page=1&sizeXYZ=true&date=true&group={group}"]
    others = [f"/webclient/metadata_details/image/{other}/", f"/webclient/metadata_details/dataset/{dataset['id']}/"]
    with httpx.Client(base_url=edge.url, timeout=15) as visitor, httpx.Client(base_url=edge.url, timeout=15) as second:
        first = {u: visitor.get(f"{u}{'&' if '?' in u else '?'}_=1") for u in shows_image + others}
        assert {r.headers["x-edge-cache"] for r in first.values()} == {"MISS"}
        # one entry for every anonymous visitor: no cookie set, no `Vary: Cookie` (OMERO.web's, not stored)
        assert not any("set-cookie" in r.headers or "cookie" in r.headers.get("vary", "").lower()
                       for r in first.values())
        hits = {u: second.get(f"{u}{'&' if '?' in u else '?'}_=2") for u in shows_image + others}
        assert {r.headers["x-edge-cache"] for r in hits.values()} == {"HIT"}
        assert all(hits[u].content == first[u].content for u in hits)
        purged = httpx.post(edge.url + "/_edge/purge", json={"image": [image]},
                            headers={"authorization": f"Bearer {PURGE_TOKEN}"}, timeout=15)
        assert purged.status_code == 200
        after = {u: visitor.get(u).headers["x-edge-cache"] for u in shows_image + others}
    assert after == {**{u: "MISS" for u in shows_image}, **{u: "HIT" for u in others}}


def test_a_comment_form_is_answered_never_stored(sim: Sim, edges, redis_server):
    """The owner may annotate: their panel holds the comment form and its CSRF token, every time fetched."""
    edge = edges("--access", "verified", "--session-redis", sim.redis_url)
    dataset = next(d for d in sim.info["datasets"] if d["public"] and d["project"] is not None)
    path = f"/webclient/metadata_details/dataset/{dataset['id']}/"
    with closing(sim.login("curator")) as session:
        jar = dict(session.cookies)
    answers = [httpx.get(edge.url + path, cookies=jar, timeout=15) for _ in range(2)]
    assert all(b"csrfmiddlewaretoken" in r.content for r in answers)
    assert [r.headers["x-edge-cache"] for r in answers] == ["MISS", "MISS"]
    public = [httpx.get(edge.url + path, timeout=15) for _ in range(2)]
    assert b"csrfmiddlewaretoken" not in public[0].content
    assert [r.headers["x-edge-cache"] for r in public] == ["MISS", "HIT"]
