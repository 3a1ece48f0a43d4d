"""Health and metrics: no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Response

from pollchat import __version__
from pollchat.domain.errors import Unavailable
from pollchat.server.deps import ServicesDep
from pollchat.server.models import ErrorResponse, HealthResponse

router = APIRouter(tags=["health"])


@router.get(
    "/api/v1/health",
    response_model=HealthResponse,
    responses={503: {"model": ErrorResponse, "description": "Storage unreachable"}},
)
async def health(services: ServicesDep) -> HealthResponse:
    """200 once the server can serve requests (storage answers)."""
    try:
        await services.storage.ping()
    except Exception as exc:
        raise Unavailable("storage is unreachable", code="storage_unavailable", retry_after=1) from exc
    return HealthResponse(version=__version__)


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format."""
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
