"""Unpadded standard base64, the text form of every key and signature."""

import base64
import binascii


def b64encode(data: bytes) -> str:
    """Encode bytes as unpadded standard base64."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    """Decode padded or unpadded standard base64; raise ValueError on anything else."""
    if "=" not in text:
        if len(text) % 4 == 1:
            raise ValueError("invalid base64 length")
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from exc
