"""The plain HTTP side of the server's port: health and metrics."""

from collections.abc import Callable

from aiohttp import web

from plauder.server.metrics import Metrics


def routes(
    metrics: Metrics, extra: Callable[[], dict[str, int]], unhealthy: Callable[[], str | None]
) -> list[web.RouteDef]:
    """Routes for /health (503 with the reason, e.g. draining) and /metrics."""

    async def health(_: web.Request) -> web.Response:
        reason = unhealthy()
        if reason is not None:
            return web.json_response({"status": reason}, status=503)
        return web.json_response({"status": "ok"})

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(extra()), content_type="text/plain")

    return [web.get("/health", health), web.get("/metrics", prometheus)]
