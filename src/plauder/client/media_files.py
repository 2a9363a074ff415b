"""Files before sending: what kind of file it is, and the copy and description to send.

Blocking and free of network I/O: the SDK calls these in a thread. PyAV and
Pillow load on first use, so that a client that sends no file (and every
command of the CLI) does not pay for importing them.
"""

import mimetypes
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MediaKind = Literal["file", "image", "video", "audio", "voice"]
OCTET_STREAM = "application/octet-stream"

# containers sent as videos or sounds: PyAV's format name -> (MIME with video, MIME without)
_AV_MIME = {
    "mov,mp4,m4a,3gp,3g2,mj2": ("video/mp4", "audio/mp4"),
    "matroska,webm": ("video/x-matroska", "audio/x-matroska"),
    "ogg": ("video/ogg", "audio/ogg"),
    "avi": ("video/x-msvideo", "video/x-msvideo"),
    "mpegts": ("video/mp2t", "video/mp2t"),
    "mpeg": ("video/mpeg", "audio/mpeg"),
    "mp3": ("audio/mpeg", "audio/mpeg"),
    "wav": ("audio/wav", "audio/wav"),
    "flac": ("audio/flac", "audio/flac"),
    "aac": ("audio/aac", "audio/aac"),
    "aiff": ("audio/aiff", "audio/aiff"),
    "amr": ("audio/amr", "audio/amr"),
}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file's MIME type and the kind of message it makes by default."""

    mime: str
    kind: Literal["file", "image", "video", "audio"]


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """A file ready to encrypt: the bytes to send (maybe a cleaned copy) and what to say of it."""

    path: Path
    kind: MediaKind
    mime: str
    name: str
    width: int = 0
    height: int = 0
    duration_ms: int = 0
    thumbnail: bytes = b""  # JPEG
    waveform: tuple[int, ...] = ()
    temporary: bool = False  # `path` is a copy made in the scratch folder: delete it afterwards


def inspect(path: Path) -> FileInfo:
    """MIME type and kind of a file, from its name and a look at its first bytes."""
    guessed = mimetypes.guess_type(path.name)[0]
    picture = _picture_mime(path)
    if picture is not None:
        return FileInfo(picture, "image")
    unnamed = guessed is None or guessed == OCTET_STREAM
    if (unnamed and _looks_like_av(path)) or (guessed or "").startswith(("audio/", "video/")):
        found = _av_info(path, guessed)
        if found is not None:
            return found
    return FileInfo(guessed or OCTET_STREAM, "file")


def prepare_file(
    src: Path,
    scratch: Path,
    *,
    kind: MediaKind | None = None,
    keep_metadata: bool = False,
    low_data: bool = False,
) -> PreparedFile:
    """Make a file ready to send as `kind` (by default what inspect() finds).

    Pictures lose their metadata unless `keep_metadata`; a voice note is
    converted to Ogg/Opus (smaller with `low_data`); videos, sounds and other
    files are sent as they are. Copies are written into `scratch`. Raises
    UnreadableMedia when the file cannot be read as the kind asked for.
    """
    from plauder.client.media_audio import VOICE_MIME, audio_duration_ms, encode_voice
    from plauder.client.media_images import prepare_image
    from plauder.client.media_video import probe_video

    if kind == "voice":
        note = scratch / f"{secrets.token_hex(8)}.ogg"
        voice = encode_voice(src, note, low_data=low_data)
        name = f"{src.stem}.ogg"
        return PreparedFile(
            note,
            "voice",
            VOICE_MIME,
            name,
            duration_ms=voice.duration_ms,
            waveform=voice.waveform,
            temporary=True,
        )
    info = inspect(src)
    match kind or info.kind:
        case "image":
            copy = scratch / f"{secrets.token_hex(8)}{src.suffix}"
            image = prepare_image(src, copy, keep_metadata=keep_metadata)
            return PreparedFile(
                image.path,
                "image",
                image.mime,
                src.name,
                width=image.width,
                height=image.height,
                thumbnail=image.thumbnail,
                temporary=image.rewritten,
            )
        case "video":
            video = probe_video(src)
            return PreparedFile(
                src,
                "video",
                info.mime,
                src.name,
                width=video.width,
                height=video.height,
                duration_ms=video.duration_ms,
                thumbnail=video.thumbnail,
            )
        case "audio":
            return PreparedFile(
                src, "audio", info.mime, src.name, duration_ms=audio_duration_ms(src)
            )
        case _:
            return PreparedFile(src, "file", info.mime, src.name)


def _looks_like_av(path: Path) -> bool:
    """Whether a file without a telling name starts like a sound or video container.

    Asking PyAV costs tens of milliseconds for a file it does not know (it
    tries every demuxer), so only files with a container's signature go to it.
    """
    with path.open("rb") as f:
        head = f.read(192)
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")  # MP4, MOV, 3GP, M4A
        or head.startswith((b"\x1a\x45\xdf\xa3", b"OggS", b"fLaC", b"ID3", b"#!AMR"))
        or (head.startswith(b"RIFF") and head[8:12] in (b"WAVE", b"AVI "))
        or (head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"))
        or head.startswith(b"\x00\x00\x01\xba")  # MPEG program stream
        or (len(head) > 188 and head[0] == head[188] == 0x47)  # MPEG transport stream
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # MP3 or AAC frame
    )


def _picture_mime(path: Path) -> str | None:
    """The MIME type of a picture sent as an image, by its header; None for anything else."""
    from PIL import Image, UnidentifiedImageError

    from plauder.client.media_images import IMAGE_MIME

    try:
        with Image.open(path) as img:
            return IMAGE_MIME.get(img.format or "")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        return None


def _av_info(path: Path, guessed: str | None) -> FileInfo | None:
    """Kind and MIME type of a video or sound PyAV can open; None for anything else."""
    import av
    import av.error

    from plauder.client.media_video import video_stream

    try:
        with av.open(str(path)) as container:
            mimes = _AV_MIME.get(container.format.name)
            if mimes is None:
                return None
            if video_stream(container) is not None:
                kind: Literal["video", "audio"] = "video"
                mime = mimes[0]
            elif container.streams.audio:
                kind, mime = "audio", mimes[1]
            else:
                return None
    except av.error.FFmpegError:
        return None
    if guessed is not None and guessed.startswith(("video/", "audio/")):
        mime = guessed  # the name tells webm from matroska, m4a from mp4
    return FileInfo(mime, kind)
