"""The browser UI: ``/`` serves the chat page, ``/web/*`` its ES modules and CSS (package data).

Every file of the page is answered with the same security headers: a Content-Security-Policy
that allows nothing from elsewhere and no framing by another origin (a ``<meta>`` policy
cannot say ``frame-ancestors``, and another origin could frame the chat page holding a
token), no content sniffing, and no referrer.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"

PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
        " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Referrer-Policy": "no-referrer",
}

# The API's own page (Swagger UI, shipped in web/vendor/ by scripts/vendor): nothing from a
# CDN on the origin that holds the token. Swagger UI starts from an inline script.
DOCS_SECURITY_HEADERS = {
    **PAGE_SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
SWAGGER_UI = "/web/vendor/swagger-ui-dist"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    """The OpenAPI document, browsable, from files this server ships."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="pollchat API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
    )
    page.headers.update(DOCS_SECURITY_HEADERS)
    return page


@router.get("/")
async def index() -> FileResponse:
    """The chat page; the token travels in the URL fragment, which never reaches the server."""
    return FileResponse(WEB_ROOT / "index.html", headers={"Cache-Control": "no-cache", **PAGE_SECURITY_HEADERS})


class _PageFiles(StaticFiles):
    """The page's files, each with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_SECURITY_HEADERS)
        return response


def static_files() -> StaticFiles:
    """The page's modules and styles."""
    return _PageFiles(directory=WEB_ROOT)
