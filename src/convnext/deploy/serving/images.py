"""Uploaded bytes to a picture, refusing whatever is not one: undecodable, empty, truncated, an
unaccepted format, or more pixels than the cap (a decompression bomb is refused before it is decoded)."""
import io
import warnings

from PIL import Image

# Pillow is asked to try only these (the FITS gzip bomb, GHSA-whj4-6x5x-4v2j, came through a format
# nobody meant to accept); the media types are what browsers and curl send for them.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
MEDIA_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/webp", "image/bmp", "image/x-ms-bmp", "image/gif"}
MAX_PIXELS = 40_000_000  # below Pillow's own bomb limit (89 M warns, 179 M raises)


class BadImage(ValueError):
    """The bytes are not a picture this service accepts (HTTP 400)."""


def decode(data: bytes, mode: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The first frame of a PNG/JPEG/WebP/BMP/GIF, converted to `mode` ("RGB" or "L")."""
    if not data:
        raise BadImage("empty body: send the image's bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(f"image has {width}x{height} pixels, more than the {max_pixels:,} accepted")
            image.load()  # decodes now, so truncation shows here and not in the worker
            return image.convert(mode)
    except BadImage:
        raise
    except Image.UnidentifiedImageError:
        raise BadImage(f"not a readable image (accepted: {', '.join(IMAGE_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("image has too many pixels (decompression bomb)") from None
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        raise BadImage(f"damaged image: {error}") from None
