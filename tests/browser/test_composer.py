"""The message box: its placeholder fits the box, from a phone's width up."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.browser.conftest import PageFactory, ServerProcess
from tests.conftest import API

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser

# The placeholder's width against the room inside the message box, in the box's own font.
PLACEHOLDER_FIT = """() => {
  const input = document.getElementById("input");
  const style = getComputedStyle(input);
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return { text: input.placeholder, width: context.measureText(input.placeholder).width, room };
}"""


def session_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def starting_with(text: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(text))


@pytest.mark.parametrize("who", ["member", "operator"])
def test_composer_placeholder_fits_a_phone(server: ServerProcess, open_page: PageFactory, who: str) -> None:
    """Regression: at 375 px the message box's placeholder was cut off mid-sentence."""
    member = server.user(f"pia-{uuid.uuid4().hex[:6]}")
    sid = session_id()
    with server.client(member) as http:
        assert http.post(f"{API}/sessions", json={"id": sid}).status_code == 201
    token = member if who == "member" else server.user(f"oleg-{uuid.uuid4().hex[:6]}", role="operator")
    page = open_page(token, sid, width=375, height=740)
    expect(page.locator("#input")).to_be_visible()
    expected = "Write a message" if who == "member" else "Reply as the assistant"
    expect(page.locator("#input")).to_have_attribute("placeholder", starting_with(expected))
    fit = page.evaluate(PLACEHOLDER_FIT)
    assert fit["room"] > 0
    assert fit["width"] <= fit["room"], fit

    # Where there is room, the keyboard hint stays.
    page.set_viewport_size({"width": 1100, "height": 740})
    expect(page.locator("#input")).to_have_attribute("placeholder", starting_with(f"{expected} (Enter sends"))
    fit = page.evaluate(PLACEHOLDER_FIT)
    assert fit["width"] <= fit["room"], fit
