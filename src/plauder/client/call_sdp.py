"""What the calls read from, or add to, SDP text: pure functions, no aiortc and no I/O.

The SDP of an offer or answer travels inside the end-to-end encryption, so what
is read here from a received one is what the other device wrote.
"""

import re
from dataclasses import dataclass

_FINGERPRINT = re.compile(r"^a=fingerprint:(\S+) ([0-9A-Fa-f:]+)\s*$")
_OPUS = re.compile(r"^a=rtpmap:(\d+) opus/48000(/\d+)?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A DTLS certificate fingerprint as an SDP states it."""

    algorithm: str  # lower case: "sha-256"
    value: str  # upper-case hex pairs joined by colons


def _lines(sdp: str) -> list[str]:
    return sdp.splitlines()


def fingerprints(sdp: str) -> list[Fingerprint]:
    """Every `a=fingerprint` of the SDP, in order, without repeats."""
    found: list[Fingerprint] = []
    for line in _lines(sdp):
        match = _FINGERPRINT.match(line)
        if match:
            fp = Fingerprint(match[1].lower(), match[2].upper())
            if fp not in found:
                found.append(fp)
    return found


def opus_payload_type(sdp: str) -> int | None:
    """The RTP payload type the SDP gives Opus, if it offers Opus at all."""
    for line in _lines(sdp):
        match = _OPUS.match(line)
        if match:
            return int(match[1])
    return None


def opus_parameters(sdp: str) -> dict[str, str]:
    """The `a=fmtp` parameters of the SDP's Opus payload type (names in lower case)."""
    pt = opus_payload_type(sdp)
    if pt is None:
        return {}
    prefix = f"a=fmtp:{pt} "
    params: dict[str, str] = {}
    for line in _lines(sdp):
        if line.startswith(prefix):
            for item in line[len(prefix) :].split(";"):
                name, _, value = item.strip().partition("=")
                if name:
                    params[name.lower()] = value.strip()
    return params


def max_average_bitrate(sdp: str) -> int | None:
    """The Opus bitrate the SDP's author wants to receive at most (`maxaveragebitrate`)."""
    value = opus_parameters(sdp).get("maxaveragebitrate", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def with_opus_parameters(sdp: str, params: dict[str, int]) -> str:
    """The SDP with these Opus `a=fmtp` parameters set (added after the Opus `a=rtpmap`).

    Parameters already stated keep their place and get the new value; others stay.
    """
    pt = opus_payload_type(sdp)
    if pt is None:
        return sdp
    merged: dict[str, str] = {**opus_parameters(sdp), **{k: str(v) for k, v in params.items()}}
    fmtp = f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in merged.items())
    out: list[str] = []
    for line in _lines(sdp):
        if line.startswith(f"a=fmtp:{pt} "):
            continue
        out.append(line)
        match = _OPUS.match(line)
        if match and int(match[1]) == pt:
            out.append(fmtp)
    return "\r\n".join(out) + "\r\n"


def has_relay_candidate(sdp: str) -> bool:
    """Whether the SDP offers a candidate on a TURN relay (`typ relay`)."""
    return any(line.startswith("a=candidate:") and " typ relay" in line for line in _lines(sdp))
