"""The Redis layer of a cluster: delivery, presence and rate limits shared by the nodes."""

from plauder.server.cluster.link import RedisLink
from plauder.server.cluster.presence import RedisPresence
from plauder.server.cluster.ratelimit import RedisLimiter
from plauder.server.cluster.router import RedisRouter

__all__ = ["RedisLimiter", "RedisLink", "RedisPresence", "RedisRouter"]
