"""Videos before sending: displayed size, duration and a thumbnail of the first frame.

Videos are sent as they are; only this description is made from them.
"""

from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream
from PIL import Image

from plauder.client.media_errors import UnreadableMedia
from plauder.client.media_images import make_thumbnail


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What a message says of a video."""

    width: int  # as displayed (a phone's rotation applied)
    height: int
    duration_ms: int
    thumbnail: bytes  # JPEG of the first frame


def probe_video(path: Path) -> VideoInfo:
    """Size, duration and first-frame thumbnail of a video; UnreadableMedia if PyAV cannot."""
    try:
        with av.open(str(path)) as container:
            stream = video_stream(container)
            if stream is None:
                raise UnreadableMedia(f"{path.name} has no video")
            frame = next(container.decode(stream), None)
            if frame is None:
                raise UnreadableMedia(f"{path.name} has no frame to show")
            image: Image.Image = frame.to_image()  # type: ignore[no-untyped-call]  # PyAV's stub
            if frame.rotation % 360:  # the angle to turn it counterclockwise for display
                image = image.rotate(frame.rotation, expand=True)
            return VideoInfo(
                width=image.width,
                height=image.height,
                duration_ms=duration_ms(container),
                thumbnail=make_thumbnail(image),
            )
    except av.error.FFmpegError as exc:
        raise UnreadableMedia(f"{path.name} cannot be read as a video: {exc}") from exc


def video_stream(container: InputContainer) -> VideoStream | None:
    """The container's first moving-picture stream (not an audio file's cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def duration_ms(container: InputContainer) -> int:
    """The container's duration in milliseconds, 0 if it does not say."""
    if container.duration is not None:
        return max(0, container.duration * 1000 // av.time_base)
    for stream in container.streams:
        if stream.duration is not None and stream.time_base is not None:
            return max(0, int(stream.duration * stream.time_base * 1000))
    return 0
