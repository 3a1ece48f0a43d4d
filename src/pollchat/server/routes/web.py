"""The browser UI: ``/`` serves the chat page, ``/web/*`` its ES modules and CSS (package data)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The chat page; the token travels in the URL fragment, which never reaches the server."""
    return FileResponse(WEB_ROOT / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """The page's modules and styles."""
    return StaticFiles(directory=WEB_ROOT)
