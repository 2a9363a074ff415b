"""The plain HTTP side of the server's port: health and metrics."""

from collections.abc import Callable

from aiohttp import web

from plauder.server.metrics import Metrics


def routes(
    metrics: Metrics, extra: Callable[[], dict[str, int]], healthy: Callable[[], bool]
) -> list[web.RouteDef]:
    """Routes for /health and /metrics."""

    async def health(_: web.Request) -> web.Response:
        if not healthy():
            return web.json_response({"status": "storage down"}, status=503)
        return web.json_response({"status": "ok"})

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(extra()), content_type="text/plain")

    return [web.get("/health", health), web.get("/metrics", prometheus)]
