"""GET /metrics: the Prometheus exposition of the server's PrometheusStatLogger."""
from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from pagedllm.metrics.prometheus import PrometheusStatLogger


def metrics_router(stat_logger: PrometheusStatLogger) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", response_class=PlainTextResponse)  # documented as the text it is
    async def metrics() -> Response:
        body, content_type = stat_logger.render()
        return Response(content=body, media_type=content_type)

    return router
