"""Tests of preparing media files: pictures, videos and voice notes, made with Pillow and PyAV."""

import array
import io
import math
import os
import sys
import types
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat
from PIL.PngImagePlugin import PngInfo

from plauder.client.errors import ClientError
from plauder.client.media_audio import (
    LOW_DATA_BITRATE,
    VOICE_BITRATE,
    VOICE_RATE,
    WAVEFORM_POINTS,
    audio_duration_ms,
    encode_voice,
    play,
    to_wav,
)
from plauder.client.media_errors import AudioUnavailable, MediaProcessingError, UnreadableMedia
from plauder.client.media_files import inspect, prepare_file
from plauder.client.media_images import (
    THUMBNAIL_MAX_BYTES,
    THUMBNAIL_SIDE,
    prepare_image,
    strip_jpeg,
)
from plauder.client.media_video import probe_video

ORIENTATION, MAKE, GPS_IFD, XMP_TAG = 0x0112, 0x010F, 0x8825, "XML:com.adobe.xmp"
TONE_SECONDS = 3.7


# ---- inputs ----


def pattern(width: int = 160, height: int = 120) -> Image.Image:
    """Smooth gradients and a red left column, to see where it went after turning."""
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            (255, 0, 0) if x < 4 else (x * 255 // width, y * 255 // height, (x + y) % 64 + 96)
            for y in range(height)
            for x in range(width)
        ]
    )
    return img


def camera_exif(orientation: int = 1) -> Image.Exif:
    """EXIF as a phone writes it: maker, orientation and a GPS position."""
    exif = Image.Exif()
    exif[MAKE] = "PhoneMaker"
    exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)})
    return exif


def write_tone(path: Path, *, codec: str, container: str, silent_half: bool = True) -> None:
    """A 440 Hz tone, 44.1 kHz stereo, TONE_SECONDS long; the second half silent."""
    rate = 44_100
    total = round(rate * TONE_SECONDS)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        for start in range(0, total, 1024):
            count = min(1024, total - start)
            samples = array.array("h")
            for i in range(start, start + count):
                on = not silent_half or i < total // 2
                value = round(12_000 * math.sin(2 * math.pi * 440 * i / rate)) if on else 0
                samples.extend((value, value))
            frame = av.AudioFrame(format="s16", layout="stereo", samples=count)
            frame.planes[0].update(samples.tobytes())
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_video(path: Path, *, rotation: int = 0) -> None:
    """One second of 64x48 MPEG-4 at 25 frames/s; the first frame red, a blue left strip."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(25):
            img = Image.new("RGB", (64, 48), (255, 0, 0) if i == 0 else (0, 255, 0))
            img.paste((0, 0, 255), (0, 0, 16, 48))
            out.mux(stream.encode(av.VideoFrame.from_image(img)))
        out.mux(stream.encode(None))


def decoded(path: Path) -> tuple[int, int, int, str]:
    """Samples, rate, channels and codec of a sound file's first audio stream, fully decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples, stream.rate, stream.layout.nb_channels, stream.codec_context.name


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two RGB pictures, over all channels."""
    assert a.size == b.size
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# ---- pictures ----


def test_a_jpeg_loses_gps_exif_xmp_and_comment_and_keeps_its_pixels(tmp_path: Path) -> None:
    src, dst = tmp_path / "photo.jpg", tmp_path / "clean.jpg"
    source = pattern()
    source.save(
        src,
        "JPEG",
        quality=95,
        exif=camera_exif(orientation=6),  # shown turned 90° clockwise
        xmp=b"<x:xmpmeta><exif:GPSLatitude>52,31N</exif:GPSLatitude></x:xmpmeta>",
        comment=b"at home",
    )
    prepared = prepare_image(src, dst)
    assert prepared.rewritten and prepared.path == dst
    assert prepared.mime == "image/jpeg"
    assert (prepared.width, prepared.height) == (120, 160)  # as displayed
    raw = dst.read_bytes()
    for secret in (b"PhoneMaker", b"GPS", b"at home", b"xmpmeta"):
        assert secret not in raw
    with Image.open(dst) as clean, Image.open(src) as original:
        assert dict(clean.getexif()) == {ORIENTATION: 6}  # how to turn it, and nothing else
        assert not clean.getexif().get_ifd(GPS_IFD)
        assert {"xmp", "comment"}.isdisjoint(clean.info)
        assert clean.tobytes() == original.tobytes()  # not re-encoded: the very same pixels
        upright = ImageOps.exif_transpose(clean)
        assert upright.size == (120, 160)
        red, green, _ = upright.convert("RGB").getpixel((60, 1))
        assert red > 200 and green < 60  # the red left column is on top when shown


def test_an_upright_jpeg_loses_every_metadata_segment(tmp_path: Path) -> None:
    src, dst = tmp_path / "photo.jpg", tmp_path / "clean.jpg"
    pattern().save(src, "JPEG", quality=90, exif=camera_exif(orientation=1), comment=b"x")
    prepare_image(src, dst)
    raw = dst.read_bytes()
    assert b"Exif" not in raw and b"PhoneMaker" not in raw
    with Image.open(dst) as clean, Image.open(src) as original:
        assert not clean.getexif() and clean.tobytes() == original.tobytes()
    with pytest.raises(UnreadableMedia):
        strip_jpeg(raw[:40])


def test_a_png_keeps_identical_pixels_without_its_metadata(tmp_path: Path) -> None:
    src, dst = tmp_path / "shot.png", tmp_path / "clean.png"
    info = PngInfo()
    info.add_text("Comment", "taken at the office")
    info.add_itxt(XMP_TAG, "<x:xmpmeta>GPS</x:xmpmeta>")
    source = pattern().convert("RGBA")
    source.putpixel((5, 5), (1, 2, 3, 4))
    source.save(src, pnginfo=info, exif=camera_exif())
    prepared = prepare_image(src, dst)
    assert prepared.rewritten and prepared.mime == "image/png"
    assert (prepared.width, prepared.height) == (160, 120)
    with Image.open(dst) as clean:
        clean.load()
        assert not clean.text
        assert not clean.getexif()
        assert "exif" not in clean.info
        assert clean.mode == "RGBA"
        assert clean.tobytes() == source.tobytes()
    assert b"office" not in dst.read_bytes()


def test_a_png_turned_by_exif_is_turned_losslessly(tmp_path: Path) -> None:
    src, dst = tmp_path / "turned.png", tmp_path / "clean.png"
    source = pattern()
    source.save(src, exif=camera_exif(orientation=3))  # upside down
    prepared = prepare_image(src, dst)
    with Image.open(prepared.path) as clean:
        assert clean.tobytes() == source.transpose(Image.Transpose.ROTATE_180).tobytes()


def test_a_picture_without_metadata_is_sent_as_it_is(tmp_path: Path) -> None:
    src = tmp_path / "plain.jpg"
    pattern().save(src, "JPEG", quality=90)
    prepared = prepare_image(src, tmp_path / "unused.jpg")
    assert prepared.path == src and not prepared.rewritten
    assert not (tmp_path / "unused.jpg").exists()
    assert (prepared.width, prepared.height) == (160, 120)


def test_keep_metadata_sends_the_original_but_reports_the_displayed_size(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    pattern().save(src, "JPEG", exif=camera_exif(orientation=6))
    prepared = prepare_image(src, tmp_path / "unused.jpg", keep_metadata=True)
    assert prepared.path == src and not prepared.rewritten
    assert (prepared.width, prepared.height) == (120, 160)
    with Image.open(io.BytesIO(prepared.thumbnail)) as thumbnail:
        assert thumbnail.size == (120, 160)


def test_an_animated_gif_keeps_its_frames_and_loses_its_comment(tmp_path: Path) -> None:
    src, dst = tmp_path / "wave.gif", tmp_path / "clean.gif"
    frames = [Image.new("RGB", (40, 30), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(
        src, save_all=True, append_images=frames[1:], duration=100, loop=0, comment=b"Berlin"
    )
    prepared = prepare_image(src, dst)
    assert prepared.rewritten and prepared.mime == "image/gif"
    assert b"Berlin" not in dst.read_bytes()
    with Image.open(dst) as clean:
        assert clean.n_frames == 3
        assert clean.info["duration"] == 100
        for i in range(3):
            clean.seek(i)
            assert clean.convert("RGB").getpixel((1, 1)) == (i * 80, 0, 0)


@pytest.mark.parametrize(
    ("size", "mode"),
    [((2400, 1800), "RGB"), ((300, 2000), "RGB"), ((100, 80), "RGBA"), ((640, 480), "L")],
)
def test_thumbnails_are_small_jpegs(tmp_path: Path, size: tuple[int, int], mode: str) -> None:
    """Even a picture of pure noise (the worst case for JPEG) gets a small thumbnail."""
    src = tmp_path / "noise.png"
    Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode))).save(src)
    prepared = prepare_image(src, tmp_path / "unused.png")
    assert len(prepared.thumbnail) <= THUMBNAIL_MAX_BYTES
    with Image.open(io.BytesIO(prepared.thumbnail)) as thumbnail:
        assert thumbnail.format == "JPEG"
        assert max(thumbnail.size) <= THUMBNAIL_SIDE
        ratio = thumbnail.size[0] / thumbnail.size[1]
        assert ratio == pytest.approx(size[0] / size[1], rel=0.1)


def test_a_smooth_photo_keeps_the_full_thumbnail_size(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    Image.linear_gradient("L").resize((1600, 1200)).convert("RGB").save(src)
    with Image.open(io.BytesIO(prepare_image(src, tmp_path / "x.jpg").thumbnail)) as thumbnail:
        assert thumbnail.size == (320, 240)


def test_what_is_not_a_picture_is_unreadable(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    with pytest.raises(UnreadableMedia) as caught:
        prepare_image(fake, tmp_path / "x.jpg")
    assert caught.value.code == "media_unreadable"
    assert isinstance(caught.value, MediaProcessingError)
    assert isinstance(caught.value, ClientError)
    truncated = tmp_path / "cut.jpg"
    pattern().save(truncated, "JPEG", exif=camera_exif())
    truncated.write_bytes(truncated.read_bytes()[:800])
    with pytest.raises(UnreadableMedia):
        prepare_image(truncated, tmp_path / "y.jpg")


# ---- kinds ----


def test_inspect_tells_kinds_by_content(tmp_path: Path) -> None:
    pattern().save(tmp_path / "photo.jpg")
    pattern().save(tmp_path / "no-extension", "PNG")
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    (tmp_path / "random.bin").write_bytes(os.urandom(5000))
    write_video(tmp_path / "clip.mp4")
    write_tone(tmp_path / "tone.wav", codec="pcm_s16le", container="wav")
    write_tone(tmp_path / "tone.mp3", codec="libmp3lame", container="mp3")
    expected = {
        "photo.jpg": ("image/jpeg", "image"),
        "no-extension": ("image/png", "image"),
        "notes.txt": ("text/plain", "file"),
        "random.bin": ("application/octet-stream", "file"),
        "clip.mp4": ("video/mp4", "video"),
        "tone.mp3": ("audio/mpeg", "audio"),
    }
    for name, (mime, kind) in expected.items():
        info = inspect(tmp_path / name)
        assert (info.mime, info.kind) == (mime, kind), name
    assert inspect(tmp_path / "tone.wav").kind == "audio"
    assert inspect(tmp_path / "tone.wav").mime in ("audio/wav", "audio/x-wav")


def test_prepare_file_describes_each_kind(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    pattern().save(tmp_path / "photo.jpg", exif=camera_exif())
    write_video(tmp_path / "clip.mp4")
    write_tone(tmp_path / "tone.flac", codec="flac", container="flac")
    (tmp_path / "notes.txt").write_text("hello")

    image = prepare_file(tmp_path / "photo.jpg", scratch)
    assert (image.kind, image.mime, image.name) == ("image", "image/jpeg", "photo.jpg")
    assert image.temporary and image.path.parent == scratch
    assert image.thumbnail and (image.width, image.height) == (160, 120)

    as_file = prepare_file(tmp_path / "photo.jpg", scratch, kind="file")
    assert (as_file.kind, as_file.path, as_file.temporary) == (
        "file",
        tmp_path / "photo.jpg",
        False,
    )

    video = prepare_file(tmp_path / "clip.mp4", scratch)
    assert (video.kind, video.mime, video.path) == ("video", "video/mp4", tmp_path / "clip.mp4")
    assert (video.width, video.height) == (64, 48) and video.thumbnail
    assert abs(video.duration_ms - 1000) <= 50

    sound = prepare_file(tmp_path / "tone.flac", scratch)
    assert (sound.kind, sound.mime) == ("audio", "audio/flac")
    assert abs(sound.duration_ms - TONE_SECONDS * 1000) <= 50

    voice = prepare_file(tmp_path / "tone.flac", scratch, kind="voice", low_data=True)
    assert (voice.kind, voice.mime, voice.name) == ("voice", "audio/ogg", "tone.ogg")
    assert voice.temporary and voice.path.parent == scratch
    assert len(voice.waveform) == WAVEFORM_POINTS

    text = prepare_file(tmp_path / "notes.txt", scratch)
    assert (text.kind, text.mime, text.thumbnail) == ("file", "text/plain", b"")
    with pytest.raises(UnreadableMedia):
        prepare_file(tmp_path / "notes.txt", scratch, kind="video")


# ---- videos ----


def test_a_video_gives_size_duration_and_a_first_frame_thumbnail(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48)
    assert abs(info.duration_ms - 1000) <= 50
    assert len(info.thumbnail) <= THUMBNAIL_MAX_BYTES
    with Image.open(io.BytesIO(info.thumbnail)) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (64, 48)
        red, green, _ = thumbnail.convert("RGB").getpixel((50, 24))
        assert red > 200 and green < 60  # the first frame, not a later green one
        assert thumbnail.convert("RGB").getpixel((4, 24))[2] > 200


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="this PyAV cannot write a display rotation",
)
def test_a_phone_video_is_described_as_displayed(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"
    write_video(path, rotation=90)  # turned a quarter counterclockwise for display
    info = probe_video(path)
    assert (info.width, info.height) == (48, 64)
    with Image.open(io.BytesIO(info.thumbnail)) as thumbnail:
        assert thumbnail.size == (48, 64)
        assert thumbnail.convert("RGB").getpixel((24, 60))[2] > 200  # the blue strip, at the bottom


def test_what_is_not_a_video_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("not a video")
    write_tone(tmp_path / "tone.wav", codec="pcm_s16le", container="wav")
    for name in ("notes.mp4", "tone.wav"):
        with pytest.raises(UnreadableMedia):
            probe_video(tmp_path / name)


# ---- voice notes ----


@pytest.mark.parametrize(
    ("name", "codec", "container"),
    [
        ("tone.wav", "pcm_s16le", "wav"),
        ("tone.mp3", "libmp3lame", "mp3"),
        ("tone.flac", "flac", "flac"),
    ],
)
def test_a_sound_becomes_a_mono_opus_voice_note(
    tmp_path: Path, name: str, codec: str, container: str
) -> None:
    src, dst = tmp_path / name, tmp_path / "note.ogg"
    write_tone(src, codec=codec, container=container)
    source_samples, source_rate, _, _ = decoded(src)
    note = encode_voice(src, dst)
    samples, rate, channels, opus = decoded(dst)
    assert (rate, channels, opus) == (VOICE_RATE, 1, "opus")
    with av.open(str(dst)) as out:
        assert out.format.name == "ogg"
    source_ms = source_samples * 1000 / source_rate
    assert abs(source_ms - TONE_SECONDS * 1000) <= 50
    assert abs(samples * 1000 / rate - source_ms) <= 50
    assert abs(note.duration_ms - source_ms) <= 50
    assert len(note.waveform) == WAVEFORM_POINTS
    assert all(0 <= point <= 255 for point in note.waveform)
    assert min(note.waveform[:31]) >= 200  # the tone
    assert max(note.waveform[33:]) <= 10  # the silent half
    assert max(note.waveform) == 255


def test_bitrates_and_low_data(tmp_path: Path) -> None:
    assert 16_000 <= VOICE_BITRATE <= 32_000
    assert LOW_DATA_BITRATE <= 12_000
    src = tmp_path / "tone.wav"
    write_tone(src, codec="pcm_s16le", container="wav", silent_half=False)
    encode_voice(src, tmp_path / "normal.ogg")
    encode_voice(src, tmp_path / "low.ogg", low_data=True)
    normal, low = (tmp_path / "normal.ogg").stat().st_size, (tmp_path / "low.ogg").stat().st_size
    assert low < normal * 0.75
    # about the bitrate asked for: 3.7 s at 24 kbit/s is about 11 KB
    assert normal < TONE_SECONDS * VOICE_BITRATE / 8 * 1.5


def test_a_silent_or_tiny_note_has_a_flat_waveform(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    with av.open(str(silent), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16_000)
        stream.layout = "mono"
        frame = av.AudioFrame(format="s16", layout="mono", samples=3_000)
        frame.planes[0].update(bytes(6_000))
        frame.sample_rate, frame.pts = 16_000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    note = encode_voice(silent, tmp_path / "silent.ogg")
    assert note.waveform == (0,) * WAVEFORM_POINTS
    assert abs(note.duration_ms - 187.5) <= 1
    samples, _, _, _ = decoded(tmp_path / "silent.ogg")
    assert abs(samples / VOICE_RATE * 1000 - 187.5) <= 50


def test_a_voice_note_exports_to_wav(tmp_path: Path) -> None:
    src, note, wav = tmp_path / "tone.wav", tmp_path / "note.ogg", tmp_path / "back.wav"
    write_tone(src, codec="pcm_s16le", container="wav")
    encode_voice(src, note)
    ms = to_wav(note, wav)
    assert abs(ms - TONE_SECONDS * 1000) <= 50
    samples, rate, channels, codec = decoded(wav)
    assert (rate, channels, codec) == (VOICE_RATE, 1, "pcm_s16le")
    assert abs(samples * 1000 / rate - TONE_SECONDS * 1000) <= 50
    assert abs(audio_duration_ms(wav) - TONE_SECONDS * 1000) <= 50


def test_what_has_no_sound_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "notes.ogg").write_text("not a sound")
    write_video(tmp_path / "silent.mp4")
    for name in ("notes.ogg", "silent.mp4"):
        with pytest.raises(UnreadableMedia):
            encode_voice(tmp_path / name, tmp_path / "out.ogg")
        with pytest.raises(UnreadableMedia):
            to_wav(tmp_path / name, tmp_path / "out.wav")
        assert not (tmp_path / "out.ogg").exists() and not (tmp_path / "out.wav").exists()


def test_a_damaged_sound_leaves_no_half_written_note(tmp_path: Path) -> None:
    src = tmp_path / "damaged.flac"
    write_tone(src, codec="flac", container="flac")
    data = bytearray(src.read_bytes())
    for i in range(2000, len(data), 997):
        data[i] ^= 0xFF
    src.write_bytes(data)
    with pytest.raises(UnreadableMedia, match="cannot be decoded"):
        encode_voice(src, tmp_path / "note.ogg")
    assert not (tmp_path / "note.ogg").exists()


def test_play_without_sounddevice_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    with pytest.raises(AudioUnavailable) as caught:
        play(tmp_path / "whatever.ogg")
    assert caught.value.code == "audio_unavailable"
    assert "plauder[audio]" in str(caught.value)


def test_play_without_an_output_device_is_audio_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sounddevice's answer on a machine without sound hardware, as PortAudio gives it."""

    class PortAudioError(Exception):
        pass

    def query_devices(kind: str) -> None:
        raise PortAudioError("Error querying device -1")

    sounddevice = types.ModuleType("sounddevice")
    sounddevice.PortAudioError = PortAudioError  # type: ignore[attr-defined]
    sounddevice.query_devices = query_devices  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", sounddevice)
    src = tmp_path / "tone.wav"
    write_tone(src, codec="pcm_s16le", container="wav")
    with pytest.raises(AudioUnavailable, match="no sound output device"):
        play(src)
