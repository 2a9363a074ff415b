"""Errors of preparing, converting and playing media files on this device.

MediaProcessingError (a ClientError)
├── UnreadableMedia    not a picture, video or sound the libraries can read
└── AudioUnavailable   nothing to play sound on (no sounddevice, PortAudio or output device)
"""

from enum import StrEnum

from plauder.client.errors import ClientError


class MediaProcessingCode(StrEnum):
    """Stable codes of the media processing errors."""

    UNREADABLE = "media_unreadable"
    AUDIO_UNAVAILABLE = "audio_unavailable"


class MediaProcessingError(ClientError):
    """A media file could not be processed on this device."""

    code: MediaProcessingCode


class UnreadableMedia(MediaProcessingError):
    """The file is not a picture, video or sound that can be read (or it is damaged)."""

    code = MediaProcessingCode.UNREADABLE


class AudioUnavailable(MediaProcessingError):
    """Sound cannot be played here: sounddevice, PortAudio or an output device is missing."""

    code = MediaProcessingCode.AUDIO_UNAVAILABLE
