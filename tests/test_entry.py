"""Entries are written whole and verified on read; placeholders are never final."""
import pytest

from edge.entry import CorruptEntry, Entry, body_matches_type

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100 + b"IEND\xaeB`\x82"


def make(body=JPEG) -> Entry:
    return Entry.build("k", 200, "image/jpeg", body, ttl=10, stale=5, epoch=3, tags=("image:1",), public=True)


def test_roundtrip():
    e = make()
    back = Entry.loads(e.dumps(), "k")
    assert (back.body, back.etag, back.tags, back.epoch, back.status) == (e.body, e.etag, e.tags, 3, 200)
    assert dict(back.headers)[b"content-length"] == str(len(JPEG)).encode()


@pytest.mark.parametrize("cut", [1, 10, 50, len(JPEG) - 1])
def test_truncated_is_corrupt(cut):
    raw = make().dumps()
    with pytest.raises(CorruptEntry):
        Entry.loads(raw[:-cut], "k")


def test_flipped_byte_and_wrong_key_are_corrupt():
    raw = bytearray(make().dumps())
    raw[-3] ^= 0xFF
    with pytest.raises(CorruptEntry):
        Entry.loads(bytes(raw), "k")
    with pytest.raises(CorruptEntry):
        Entry.loads(make().dumps(), "other")
    with pytest.raises(CorruptEntry):
        Entry.loads(b"garbage", "k")


def test_placeholder_png_labelled_jpeg_is_not_final():
    assert body_matches_type("image/jpeg", JPEG)
    assert not body_matches_type("image/jpeg", PNG)
    assert body_matches_type("image/png", PNG)
    assert not body_matches_type("image/png", b"")
    assert not body_matches_type("image/jpeg", JPEG[:-1])  # cut short: no end-of-image marker
    assert not body_matches_type("image/png", PNG[:60])


def test_etag_is_content_hash():
    assert make().etag == make().etag
    assert make().etag != make(JPEG + b"y").etag


def test_other_format_versions_are_told_from_corruption():
    from edge.entry import FORMAT_VERSION, MAGIC, OtherVersion

    raw = make().dumps()
    assert raw.startswith(MAGIC) and MAGIC == b"OE%d\n" % FORMAT_VERSION
    for other in (b"OE%d\n" % (FORMAT_VERSION + 1) + raw[len(MAGIC):], b"OE0\n" + raw[len(MAGIC):], {"old": 1}, "x"):
        with pytest.raises(OtherVersion):
            Entry.loads(other, "k")
    for garbage in (b"", b"OEx\n" + raw[4:], b"\x00" * 40):
        with pytest.raises(CorruptEntry) as caught:
            Entry.loads(garbage, "k")
        assert not isinstance(caught.value, OtherVersion)


def test_disk_tier_never_unpickles(tmp_path):
    from edge.tiers import DiskTier

    tier = DiskTier(str(tmp_path), 2**20)
    tier.cache.set("d", {"a pickled": "object"})
    assert tier.get("d", "k") is None and "d" not in tier.cache  # a miss, removed
    tier.set_many([("d", make())])
    assert tier.get("d", "k").body == JPEG
    tier.close()
