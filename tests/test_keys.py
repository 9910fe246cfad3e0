"""The canonical key: folds what the backend treats alike, keeps everything that changes bytes."""
import pytest

from edge.keys import PUBLIC, SHARED, key_for, is_full_rdef, parse_query, BadQuery
from edge.routes import ROUTES, cacheable_regex, match
import re


def k(url: str, **kw) -> str | None:
    path, _, qs = url.partition("?")
    return key_for(path, qs.encode(), **kw)


def test_thumbnail_default_size_folds():
    assert k("/webgateway/render_thumbnail/12/") == k("/webgateway/render_thumbnail/12/96/")
    assert k("/webgateway/render_birds_eye_view/12/") == k("/webgateway/render_thumbnail/12/96/")
    assert k("/webgateway/render_thumbnail/12/") != k("/webgateway/render_thumbnail/12/64/")
    assert k("/webgateway/render_thumbnail/12/96/96/") != k("/webgateway/render_thumbnail/12/96/")
    # a site whose default thumbnail size is 128 folds 128, not 96
    assert k("/webgateway/render_thumbnail/12/", default_size=128) == k("/webgateway/render_thumbnail/12/128/",
                                                                         default_size=128)


def test_cache_buster_dropped_and_params_sorted():
    assert k("/webgateway/render_thumbnail/1/?_=123") == k("/webgateway/render_thumbnail/1/?_=999")
    assert k("/webgateway/render_thumbnail/1/?z=1&t=2") == k("/webgateway/render_thumbnail/1/?t=2&z=1")


@pytest.mark.parametrize("param", ["z=1", "t=1", "rdefId=3", "c=1|0:255$FF0000", "m=g", "p=intmax", "q=0.5",
                                   "ia=1", "maps=[]", "tile=0,1,1", "region=0,0,10,10", "format=png", "flip=h",
                                   "size=64", "layout=shrink", "callback=f", "getDefaults=true"])
def test_byte_changing_params_are_kept(param):
    assert k(f"/webgateway/render_image_region/1/0/0/?{param}") != k("/webgateway/render_image_region/1/0/0/")


def test_repeated_params_keep_their_order():
    # Django reads the last value: z=1&z=2 and z=2&z=1 are different requests
    assert k("/webgateway/render_image/1/?z=1&z=2") != k("/webgateway/render_image/1/?z=2&z=1")


def test_credentials_and_batches_have_no_single_key():
    assert k("/webgateway/render_thumbnail/1/?bsession=abc") is None
    assert k("/webgateway/render_thumbnail/1/?username=a&password=b") is None
    assert k("/webgateway/get_thumbnails/?id=1&id=2") is None
    assert k("/webclient/login/") is None


def test_invalid_utf8_never_folds():
    with pytest.raises(BadQuery):
        parse_query(b"c=%FF")
    assert k("/webgateway/render_image/1/?c=%FF") is None
    assert k("/webgateway/render_image/1/?c=%FE") is None


def test_audience_and_host():
    user = "u:abc"
    assert k("/webgateway/render_thumbnail/1/", audience=user) != k("/webgateway/render_thumbnail/1/")
    maps = '[{"inverted":{"enabled":false},"quantization":{"family":"linear","coefficient":1}},' \
           '{"inverted":{"enabled":true},"quantization":{"family":"logarithmic","coefficient":1}}]'
    full = f"/webgateway/render_image_region/1/0/0/?tile=0,0,0&c=1|0:255$FF0000,-2|0:10$00FF00&m=c&maps={maps}"
    assert k(full, audience=user) != k(full, audience=PUBLIC)  # the channel count is not known yet
    assert k(full, audience=user, channels=2) == k(full, audience=PUBLIC, channels=2)
    assert k(full, channels=2).startswith(SHARED)
    assert not k(full, channels=3).startswith(SHARED)  # an unlisted channel keeps the reader's settings
    default_plane = full.replace("render_image_region/1/0/0/", "render_image/1/")  # the reader's default Z/T
    assert not k(default_plane, channels=2).startswith(SHARED)
    partial = "/webgateway/render_image_region/1/0/0/?tile=0,0,0&c=1,2&m=c"
    assert k(partial, audience=user) != k(partial, audience=PUBLIC)
    assert k("/api/v0/m/screens/", host="a") != k("/api/v0/m/screens/", host="b")
    assert k("/webgateway/render_thumbnail/1/", host="a") == k("/webgateway/render_thumbnail/1/", host="b")


def test_full_rdef():
    maps = ("maps", '[{"inverted":{"enabled":false},"quantization":{"family":"linear"}},'
                    '{"reverse":{"enabled":false},"quantization":{"family":"exponential","coefficient":2}}]')
    assert is_full_rdef([("c", "1|100:505$0000FF,-2|0:1$00FF00"), ("m", "c"), maps], 2)
    assert not is_full_rdef([("c", "1|100:505$0000FF,-2|0:1$00FF00"), ("m", "c")], 2)  # no maps: saved family
    assert not is_full_rdef([("c", "1|100:505$0000FF,-2"), ("m", "c"), maps], 2)
    assert not is_full_rdef([("c", "1|100:505$0000FF,1|0:1$00FF00"), ("m", "c"), maps], 2)  # a channel twice
    assert not is_full_rdef([("c", "1|100:505$0000FF,-2|0:1$00FF00"), maps], 2)  # no m
    assert not is_full_rdef([("c", "1|100:505$0000FF,-2|0:1$00FF00"), ("m", "c"), maps], None)


def test_plate_field_default_folds():
    assert k("/webgateway/plate/5/") == k("/webgateway/plate/5/0/")
    assert k("/webgateway/plate/5/1/") != k("/webgateway/plate/5/0/")
    assert k("/webgateway/plate/5/0/7/") != k("/webgateway/plate/5/0/")


def test_route_table_regex_covers_every_route():
    regex = re.compile(cacheable_regex())
    samples = ["/webgateway/render_thumbnail/1/", "/webgateway/get_thumbnails/", "/api/v0/m/plates/3/wells/",
               "/webclient/render_thumbnail/size/64/3/", "/webgateway/render_thumbnail_ngff/3/64",
               "/webgateway/imgData/3/", "/webgateway/plate/1/0/"]
    for path in samples:
        assert match(path) is not None and regex.match(path), path
    assert not regex.match("/webclient/login/") and match("/webclient/login/") is None
    assert len({r.name for r in ROUTES}) == len(ROUTES)


def test_trailing_newline_is_not_the_same_url():
    assert match("/webgateway/render_thumbnail/1/\n") is None
    assert k("/webgateway/render_thumbnail/1/\n") is None
