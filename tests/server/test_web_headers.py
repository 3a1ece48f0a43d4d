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


async def test_docs_use_the_shipped_swagger_ui_and_cannot_be_framed(api: Api) -> None:
    """``/docs`` loaded unpinned scripts from a CDN on the origin that holds the token."""
    r = await api.http.get("/docs")
    assert r.status_code == 200
    assert "/web/vendor/swagger-ui-dist/swagger-ui-bundle.js" in r.text
    assert "cdn" not in r.text.lower() and "https://" not in r.text
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    bundle = await api.http.get("/web/vendor/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert (await api.http.get("/redoc")).status_code == 404
