"""The chat page and its files carry security headers: no framing by other origins, no sniffing."""

from __future__ import annotations

import pytest

from tests.conftest import Api


@pytest.mark.parametrize("path", ["/", "/web/app.js", "/web/style.css", "/web/index.html"])
async def test_page_files_carry_security_headers(api: Api, path: str) -> None:
    """``/`` and ``/web/*`` sent no CSP header (another origin framed the page), no nosniff, no referrer policy."""
    r = await api.http.get(path)
    assert r.status_code == 200
    policy = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
