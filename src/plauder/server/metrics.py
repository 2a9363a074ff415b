"""Counters the server exposes on /metrics."""

from dataclasses import dataclass


@dataclass
class Metrics:
    """Process-wide counters, owned by the composition root and passed to services."""

    connections_opened: int = 0
    connections_open: int = 0
    authenticated: int = 0
    frames_received: int = 0
    errors_sent: int = 0
    messages_stored: int = 0
    envelopes_pushed: int = 0
    envelopes_acked: int = 0
    group_envelopes_queued: int = 0
    media_uploads_reserved: int = 0
    media_blobs_stored: int = 0  # uploads completed
    media_bytes_uploaded: int = 0
    media_bytes_downloaded: int = 0
    turn_credentials_issued: int = 0  # answers to get_turn with relays

    def render(self, extra: dict[str, int]) -> str:
        """Prometheus text exposition of all counters."""
        lines = []
        for name, value in [*vars(self).items(), *extra.items()]:
            lines.append(f"plauder_{name} {value}")
        return "\n".join(lines) + "\n"
