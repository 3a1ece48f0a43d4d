"""Poll cursors and ETags: opaque, bound to one session by a keyed tag, never ahead of it."""

from __future__ import annotations

import pytest

from pollchat.domain.cursor import TAG_HEX_DIGITS, Cursors, is_message_id
from pollchat.domain.errors import BadRequest
from pollchat.domain.ids import new_message_id, new_session_id

CURSORS = Cursors(b"k" * 32)
encode_cursor = CURSORS.encode
decode_cursor = CURSORS.decode


@pytest.mark.parametrize("seq", [0, 1, 42, 10**17, 10**18 - 1])
@pytest.mark.parametrize("session_id", ["s1", "a.b:c-d_e", "ü-unicode", new_session_id()])
def test_round_trip(session_id: str, seq: int) -> None:
    cursor = encode_cursor(session_id, seq)
    assert cursor.startswith("c_")
    assert not is_message_id(cursor)
    assert decode_cursor(session_id, cursor, head=seq) == seq
    assert decode_cursor(session_id, cursor, head=seq + 5) == seq


def test_cursor_of_another_session_is_refused() -> None:
    cursor = encode_cursor("s1", 3)
    with pytest.raises(BadRequest) as info:
        decode_cursor("s2", cursor, head=10)
    assert (info.value.status_code, info.value.code) == (400, "cursor_wrong_session")


def test_cursor_ahead_of_the_head_is_refused() -> None:
    with pytest.raises(BadRequest) as info:
        decode_cursor("s1", encode_cursor("s1", 8), head=7)
    assert info.value.code == "cursor_ahead"


TAG = CURSORS.tag("s1")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "c_",
        "c__",
        "c_1",
        "c_1_",
        f"c__{TAG}",
        f"c_x_{TAG}",
        f"c_-1_{TAG}",
        f"c_+1_{TAG}",
        f"c_ 1_{TAG}",
        f"c_1.0_{TAG}",
        f"c_{'1' * 19}_{TAG}",
        f"x_1_{TAG}",
        f"C_1_{TAG}",
        f"1_{TAG}",
        # Unicode digits: str.isdigit() is true for them, int() refuses '²' and would read '١' as 1.
        f"c_\u00b2_{TAG}",
        f"c_\u0661_{TAG}",
        f"c_\uff11_{TAG}",
        "garbage",
        "msg",
    ],
)
def test_garbage_is_a_bad_request(garbage: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_cursor("s1", garbage, head=10**18)
    assert (info.value.status_code, info.value.code) == (400, "bad_cursor")


def test_the_tag_is_checked_exactly() -> None:
    cursor = encode_cursor("s1", 1)
    for tampered in (cursor + "0", cursor[:-1], cursor.upper().replace("C_", "c_", 1) + "x"):
        with pytest.raises(BadRequest):
            decode_cursor("s1", tampered, head=5)


def test_is_message_id() -> None:
    assert is_message_id(new_message_id())
    assert is_message_id("msg_anything")
    assert not is_message_id(encode_cursor("s1", 1))
    assert not is_message_id("message_1")
    assert not is_message_id("")


def test_tags_are_keyed_with_the_server_secret() -> None:
    """A plain hash of the session id let anyone search offline for two colliding sessions."""
    other = Cursors(b"o" * 32)
    assert CURSORS.tag("s1") != other.tag("s1")
    assert len(CURSORS.tag("s1")) == TAG_HEX_DIGITS == 32
    with pytest.raises(BadRequest) as info:
        other.decode("s1", encode_cursor("s1", 1), head=5)
    assert info.value.code == "cursor_wrong_session"


def test_the_sessions_of_a_known_32_bit_collision_have_distinct_tags() -> None:
    """``iso-23258`` and ``iso-87581`` shared the unkeyed 32-bit tag ``6bc5f3db``."""
    assert CURSORS.tag("iso-23258") != CURSORS.tag("iso-87581")
    assert CURSORS.etag("iso-23258", head=1, after=0, limit=100) != CURSORS.etag(
        "iso-87581", head=1, after=0, limit=100
    )


def test_cursors_refuse_to_work_before_the_secret_is_read() -> None:
    with pytest.raises(RuntimeError):
        Cursors().encode("s1", 1)
