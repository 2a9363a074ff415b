"""Pictures before sending: upright, without metadata, with a small JPEG thumbnail."""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from plauder.client.media_errors import UnreadableMedia

THUMBNAIL_SIDE = 320  # pixels, the longest side at most
THUMBNAIL_MAX_BYTES = 8 * 1024
_THUMBNAIL_SIDES = (THUMBNAIL_SIDE, 256, 192, 128, 96)
_THUMBNAIL_QUALITIES = (75, 60, 45, 30)
JPEG_QUALITY = 95  # a re-encoded photo: no visible loss
WEBP_QUALITY = 95

# pictures sent as images, which every client shows inline: Pillow's format -> MIME
IMAGE_MIME = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # a JPEG with more pictures (depth, stereo) after the first
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
# JPEG segments that describe how to show the pixels, not where or by whom they were taken
_HARMLESS_SEGMENTS = (("APP0", b"JFIF\0"), ("APP2", b"ICC_PROFILE\0"), ("APP14", b"Adobe"))
ORIENTATION = 0x0112  # the EXIF tag saying how to turn the stored pixels for display
# what a clean copy keeps of Pillow's `info`: colour and animation, nothing else
_KEPT_INFO = ("icc_profile", "transparency", "dpi", "duration", "loop", "background")
# Pillow's errors for a file it cannot read (SyntaxError from some of its parsers)
_DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError)


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A picture ready to send: which file, its MIME type, displayed size and thumbnail."""

    path: Path  # the source itself, or the clean copy written to `dst`
    mime: str
    width: int
    height: int
    thumbnail: bytes  # JPEG
    rewritten: bool  # `path` is the clean copy


def prepare_image(src: Path, dst: Path, *, keep_metadata: bool = False) -> PreparedImage:
    """Strip a picture's metadata into `dst` unless it has none.

    A picture without metadata, or any picture with `keep_metadata`, is sent
    as it is. A clean copy keeps the pixels: a JPEG loses its metadata
    segments and keeps its compressed data byte for byte (a turned photo keeps
    an EXIF block with its orientation alone); PNG and GIF are rewritten
    losslessly, turned upright; WebP is re-encoded at quality 95. Raises
    UnreadableMedia for anything that is not a JPEG, PNG, GIF or WebP picture
    Pillow can decode.
    """
    try:
        with Image.open(src) as img:
            mime = IMAGE_MIME.get(img.format or "")
            if mime is None:
                raise UnreadableMedia(f"{src.name} is not a JPEG, PNG, GIF or WebP picture")
            animated = getattr(img, "n_frames", 1) > 1
            # orientation applies to still pictures; animations are shown as stored
            upright = img if animated else ImageOps.exif_transpose(img)
            thumbnail = make_thumbnail(upright)
            width, height = upright.size
            # an orientation is EXIF, so a turned picture always has metadata to strip
            if keep_metadata or not _has_metadata(img):
                return PreparedImage(src, mime, width, height, thumbnail, rewritten=False)
            if img.format == "JPEG":
                orientation = int(img.getexif().get(ORIENTATION, 1))
                clean = strip_jpeg(src.read_bytes(), orientation)
            else:
                clean = _clean_copy(img, upright, animated)
    except _DECODE_ERRORS as exc:
        raise UnreadableMedia(f"{src.name} cannot be read as a picture: {exc}") from exc
    dst.write_bytes(clean)
    return PreparedImage(dst, mime, width, height, thumbnail, rewritten=True)


def make_thumbnail(image: Image.Image) -> bytes:
    """A JPEG of the picture, longest side at most THUMBNAIL_SIDE, within THUMBNAIL_MAX_BYTES."""
    rgb = _flatten(image)
    data = b""
    for side in _THUMBNAIL_SIDES:
        small = _fit(rgb, side)
        for quality in _THUMBNAIL_QUALITIES:
            out = io.BytesIO()
            small.save(out, "JPEG", quality=quality, optimize=True)
            data = out.getvalue()
            if len(data) <= THUMBNAIL_MAX_BYTES:
                return data
    return data


def _fit(image: Image.Image, side: int) -> Image.Image:
    """The image scaled down (never up) so that its longest side is at most `side`."""
    width, height = image.size
    scale = side / max(width, height, 1)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _flatten(image: Image.Image) -> Image.Image:
    """The image as RGB, transparent parts on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode.startswith("I"):  # 16- or 32-bit greyscale: scale to 8 bits
        image = image.convert("I").point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def strip_jpeg(data: bytes, orientation: int = 1) -> bytes:
    """A JPEG without its metadata segments, its compressed pixels unchanged.

    Keeps JFIF, the colour profile and Adobe's colour transform; drops EXIF,
    XMP, IPTC, comments and every other application segment. An orientation
    other than 1 is kept in a new EXIF block holding nothing else.
    """
    if data[:2] != b"\xff\xd8":
        raise UnreadableMedia("not a JPEG file")
    out = bytearray(data[:2])
    if orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        block = exif.tobytes()
        out += b"\xff\xe1" + (len(block) + 2).to_bytes(2, "big") + block
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise UnreadableMedia("a damaged JPEG: no marker where one belongs")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        segment = data[at : at + 2 + length]
        if marker == 0xDA:  # start of scan: the compressed pixels and the rest, as they are
            out += data[at:]
            return bytes(out)
        name = f"APP{marker - 0xE0}" if 0xE0 <= marker <= 0xEF else ""
        keep = not name and marker != 0xFE  # every non-APP segment but comments
        keep = keep or any(name == m and segment[4:].startswith(p) for m, p in _HARMLESS_SEGMENTS)
        if keep:
            out += segment
        at += 2 + length
    raise UnreadableMedia("a damaged JPEG: it ends before its pixels")


def _has_metadata(img: Image.Image) -> bool:
    """Whether the file carries anything beyond pixels, colour profile and animation."""
    if isinstance(img, JpegImagePlugin.JpegImageFile):
        return any(
            not any(marker == m and data.startswith(p) for m, p in _HARMLESS_SEGMENTS)
            for marker, data in img.applist
        )
    text: dict[str, Any] = getattr(img, "text", {})  # PNG text chunks (loads the image)
    extension = img.info.get("extension", (b"",))[0]  # a GIF's application extension
    return (
        bool(text)
        or any(key in img.info for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment"))
        or extension not in (b"", b"NETSCAPE2.0", b"ANIMEXTS1.0")  # those two say: loop
    )


def _clean_copy(img: Image.Image, upright: Image.Image, animated: bool) -> bytes:
    """The picture in its format with nothing but pixels, colour and timing."""
    kept: dict[str | tuple[int, int], Any] = {k: img.info[k] for k in _KEPT_INFO if k in img.info}
    source = img if animated else upright
    source.info = dict(kept)  # Pillow falls back to `info` for some fields: leave it nothing else
    params: dict[str, Any] = {"icc_profile": kept.get("icc_profile"), "exif": b"", "comment": b""}
    if "dpi" in kept:
        params["dpi"] = kept["dpi"]
    out = io.BytesIO()
    match img.format:
        case "JPEG" | "MPO":
            sampling = JpegImagePlugin.get_sampling(img)
            if sampling >= 0:
                params["subsampling"] = sampling
            source.save(out, "JPEG", quality=JPEG_QUALITY, **params)
        case "PNG" | "GIF":
            source.save(out, img.format, save_all=animated, **params)
        case _:
            source.save(out, "WEBP", quality=WEBP_QUALITY, save_all=animated, **params)
    return out.getvalue()
