"""The SDP helpers of calls: pure functions over SDP text."""

from plauder.client.call_sdp import (
    Fingerprint,
    fingerprints,
    has_relay_candidate,
    max_average_bitrate,
    opus_parameters,
    opus_payload_type,
    with_opus_parameters,
)

SDP = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 127.0.0.1",
        "a=rtpmap:111 opus/48000/2",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host",
        "a=fingerprint:sha-256 ab:CD:ef",
        "a=fingerprint:SHA-512 01:02",
        "a=fingerprint:sha-256 AB:CD:EF",
        "a=setup:actpass",
        "",
    ]
)


def test_fingerprints_in_order_normalised_without_repeats() -> None:
    assert fingerprints(SDP) == [
        Fingerprint("sha-256", "AB:CD:EF"),
        Fingerprint("sha-512", "01:02"),
    ]
    assert fingerprints("v=0\r\n") == []


def test_opus_payload_type_and_parameters() -> None:
    assert opus_payload_type(SDP) == 111
    assert opus_payload_type(SDP.replace("opus", "PCMU")) is None
    assert opus_parameters(SDP) == {}
    assert max_average_bitrate(SDP) is None


def test_opus_parameters_are_added_after_the_rtpmap_and_merged() -> None:
    once = with_opus_parameters(SDP, {"maxaveragebitrate": 12000, "stereo": 0})
    lines = once.split("\r\n")
    assert lines[lines.index("a=rtpmap:111 opus/48000/2") + 1] == (
        "a=fmtp:111 maxaveragebitrate=12000;stereo=0"
    )
    assert max_average_bitrate(once) == 12000
    twice = with_opus_parameters(once, {"maxaveragebitrate": 32000, "useinbandfec": 1})
    assert twice.count("a=fmtp:111") == 1
    assert opus_parameters(twice) == {
        "maxaveragebitrate": "32000",
        "stereo": "0",
        "useinbandfec": "1",
    }
    assert twice.endswith("\r\n") and fingerprints(twice) == fingerprints(SDP)
    assert with_opus_parameters("v=0\r\n", {"stereo": 0}) == "v=0\r\n"  # no Opus: unchanged


def test_a_nonsense_bitrate_is_no_cap() -> None:
    assert max_average_bitrate(with_opus_parameters(SDP, {"maxaveragebitrate": 0})) is None
    bad = SDP.replace(
        "a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 maxaveragebitrate=x"
    )
    assert max_average_bitrate(bad) is None


def test_relay_candidates_are_recognised() -> None:
    assert not has_relay_candidate(SDP)
    relayed = SDP.replace("typ host", "typ relay raddr 10.0.0.1 rport 5000")
    assert has_relay_candidate(relayed)
    assert not has_relay_candidate("a=note: typ relay\r\n")  # only candidate lines count
