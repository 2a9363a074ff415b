"""Protocol version and the limits a server announces in its `welcome` frame."""

import msgspec

PROTOCOL_VERSION = 1

# Largest number of one-time keys a device may keep on the server.
MAX_STORED_ONE_TIME_KEYS = 200


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Sizes and counts the server enforces; announced to clients on connect."""

    max_frame_bytes: int = 256 * 1024
    max_envelopes_per_send: int = 64
    max_body_bytes: int = 64 * 1024
    max_keys_per_upload: int = 100
    keys_low_threshold: int = 10
    max_group_members: int = 1024
    max_media_bytes: int = 100 * 1024 * 1024  # bytes of one file; its blob may be larger
