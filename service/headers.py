"""A bounded structural read of an upload, before Pillow parses anything: its declared size, and a work budget.

Pillow walks image containers in Python: every JPEG marker before the first scan, every PNG chunk, every GIF block
before the first frame, every TIFF strip is a trip through its interpreter loop (about 6-20 µs each here). A 26 MB
JPEG of empty APP markers took 21 s to open, a PNG of two million unknown chunks 12 s. This module reads the same
structures first with a fixed budget and refuses the upload (``MalformedImageError``, HTTP 422) as soon as the
budget is spent, so that opening any accepted upload costs at most a few thousand such steps:

* ``MAX_HEADER_UNITS`` (1024) markers, chunks, blocks, fill bytes or directory entries that Pillow parses one by one
  (JPEG markers before the first scan, PNG chunks other than image data, GIF extension blocks and sub-blocks before
  the first image, TIFF directory entries);
* ``MAX_SEGMENTS`` (8192) data segments (PNG chunks in all, TIFF strips or tiles, WebP chunks) and
  ``MAX_JPEG_SCANS`` (256) JPEG scans, each of which the decoder visits in turn;
* metadata that is parsed entry by entry (EXIF) is refused above ``MAX_EXIF_BYTES`` (64 KiB, the most a JPEG
  can carry).

It also checks what Pillow lets through or reports with the wrong status:

* declared sizes must be positive and representable (a BMP with a negative width or a height of INT_MIN is
  malformed, not a decompression bomb); a PNG transparency chunk must fit its colour type and palette;
* **the data must be able to hold the declared pixels**: no codec can expand its data beyond a fixed ratio, so a
  header that declares more pixels than its bytes can possibly describe is refused before anything is decoded
  (a 1 KB JPEG claiming 4096×4096 decodes, in libjpeg, to a grey 16-megapixel image, which is then worth minutes
  of model time). The bounds are true lower bounds for valid files: PNG's deflate expands at most 1032:1; a
  Huffman-coded JPEG spends at least one bit per 8×8 block of every component; GIF's LZW at most about 2730
  pixels per byte; uncompressed BMP and TIFF need every row. Formats and codings that can describe a flat image
  in a few bytes (WebP, arithmetic-coded JPEG, run-length BMP, CCITT TIFF) are bounded by the pixel limits only.

WebP is parsed by libwebp in C and needs no budget beyond its EXIF size. Everything here is plain ``bytes``
slicing with ``struct``: its own cost is bounded by the same budgets.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from service.errors import MalformedImageError

__all__ = [
    "MAX_EXIF_BYTES",
    "MAX_HEADER_UNITS",
    "MAX_JPEG_SCANS",
    "MAX_SEGMENTS",
    "Declared",
    "read_header",
]

MAX_HEADER_UNITS = 1024
"""Markers, chunks, blocks, fill bytes or directory entries parsed one by one before the pixels."""
MAX_SEGMENTS = 8192
"""PNG chunks in all, or TIFF strips or tiles."""
MAX_JPEG_SCANS = 256
"""Scans of a JPEG (a progressive file from libjpeg has about ten)."""
MAX_EXIF_BYTES = 64 * 1024
"""EXIF blocks are parsed entry by entry; a JPEG cannot carry more than this in one APP1 segment."""

_DEFLATE_RATIO = 1100  # deflate expands at most 1032:1 (258 bytes from a 2-bit code); a little room for framing
_LZW_PIXELS_PER_BYTE = 4096  # GIF LZW: at most ~2730 pixels per byte (12-bit codes of strings up to 4096)
_UINT31 = 2**31 - 1


@dataclass(frozen=True)
class Declared:
    """What the header of an upload declares.

    Attributes:
        format: the container (PNG, JPEG, GIF, BMP, TIFF, WEBP).
        width: the stored width in pixels (before any EXIF rotation).
        height: the stored height in pixels.
        data_bytes: bytes available to the pixel data (an upper estimate).
        min_data_bytes: the fewest bytes that can hold the declared pixels in this coding (0 when unknown).
    """

    format: str
    width: int
    height: int
    data_bytes: int = 0
    min_data_bytes: int = 0

    @property
    def pixels(self) -> int:
        """Width × height."""
        return self.width * self.height

    def check_data(self) -> None:
        """Refuse a header that declares more pixels than its data can hold.

        Raises:
            MalformedImageError: when ``data_bytes < min_data_bytes``.
        """
        if self.data_bytes < self.min_data_bytes:
            raise MalformedImageError(
                f"the {self.format} declares {self.width}x{self.height} pixels, which need at least "
                f"{self.min_data_bytes} bytes of image data; it has {self.data_bytes}"
            )


def read_header(data: bytes) -> Declared | None:
    """The declared size of an upload in an accepted format, read within the budgets; None for other formats.

    None also when the container is too short to tell: Pillow's own parser then reports the problem.

    Raises:
        MalformedImageError: a budget is exceeded, or the header is inconsistent (HTTP 422).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _gif(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return _tiff(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _refuse(message: str) -> MalformedImageError:
    return MalformedImageError(message)


def _over_budget(what: str, limit: int) -> MalformedImageError:
    return _refuse(f"the image has more than {limit} {what}; refused to bound the work of reading it")


def _check_size(fmt: str, width: int, height: int) -> None:
    if not (1 <= width <= _UINT31 and 1 <= height <= _UINT31):
        raise _refuse(f"the {fmt} header declares an invalid size {width}x{height}")


# -- PNG ---------------------------------------------------------------------------------------------------------
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_DATA_CHUNKS = (b"IDAT", b"fdAT")
_PNG_FRAME_CHUNKS = (b"IDAT", b"fdAT", b"fcTL")  # counted as segments only: an animation has one fcTL per frame


def _png(data: bytes) -> Declared | None:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    (length,) = struct.unpack_from(">I", data, 8)
    if length != 13:
        raise _refuse("the PNG header chunk has the wrong length")
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise _refuse("the PNG header chunk is corrupt (CRC mismatch)")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    _check_size("PNG", width, height)
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise _refuse(f"the PNG header declares an invalid bit depth {depth} for colour type {colour}")
    offset, chunks, others, image_bytes, palette = 33, 1, 0, 0, None
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        chunks += 1
        if chunks > MAX_SEGMENTS:
            raise _over_budget("PNG chunks", MAX_SEGMENTS)
        if kind in _PNG_DATA_CHUNKS:
            image_bytes += min(length, len(data) - offset - 8)
        elif kind in _PNG_FRAME_CHUNKS:
            pass
        else:
            others += 1
            if others > MAX_HEADER_UNITS:
                raise _over_budget("PNG metadata chunks", MAX_HEADER_UNITS)
            if kind == b"PLTE":
                palette = length // 3
            elif kind == b"tRNS":
                _check_png_transparency(colour, length, palette)
            elif kind == b"eXIf" and length > MAX_EXIF_BYTES:
                raise _over_budget("bytes of EXIF", MAX_EXIF_BYTES)
            elif kind == b"IEND":
                break
        offset += 12 + length
    row_bytes = 1 + (width * depth * _PNG_CHANNELS[colour] + 7) // 8
    return Declared("PNG", width, height, image_bytes, (height * row_bytes) // _DEFLATE_RATIO)


def _check_png_transparency(colour: int, length: int, palette: int | None) -> None:
    """A tRNS chunk must match the colour type: 2 bytes (grey), 6 (RGB), at most one per palette entry."""
    if colour == 3:
        limit = 256 if palette is None else palette
        if length > limit:
            raise _refuse(f"the PNG transparency chunk has {length} entries for a palette of {limit}")
    elif colour in (0, 2):
        expected = 2 if colour == 0 else 6
        if length != expected:
            raise _refuse(f"the PNG transparency chunk has {length} bytes; colour type {colour} needs {expected}")
    else:
        raise _refuse(f"a PNG of colour type {colour} (with alpha) cannot have a transparency chunk")


# -- JPEG --------------------------------------------------------------------------------------------------------
_SOF_HUFFMAN = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_SOF_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg(data: bytes) -> Declared | None:
    offset, units, frame, huffman = 2, 0, None, False
    size = len(data)
    while offset + 1 < size:
        if data[offset] != 0xFF:
            return None  # not a marker where one must be: Pillow reports it
        while offset + 1 < size and data[offset + 1] == 0xFF:  # fill bytes, each a step of Pillow's loop
            offset += 1
            units += 1
            if units > MAX_HEADER_UNITS:
                raise _over_budget("JPEG markers and fill bytes before the image data", MAX_HEADER_UNITS)
        if offset + 1 >= size:
            return None
        marker = data[offset + 1]
        units += 1
        if units > MAX_HEADER_UNITS:
            raise _over_budget("JPEG markers and fill bytes before the image data", MAX_HEADER_UNITS)
        offset += 2
        if marker in _STANDALONE:
            continue
        if marker == 0xD9 or offset + 2 > size:  # EOI before any scan, or cut short
            return None
        (length,) = struct.unpack_from(">H", data, offset)
        if length < 2:
            return None
        if marker in _SOF_HUFFMAN or marker in _SOF_ARITHMETIC:
            frame = _jpeg_frame(data[offset + 2 : offset + length])
            huffman = marker in _SOF_HUFFMAN
        if marker == 0xDA:
            scan_start = offset + length
            if frame is None:
                return None
            scans = 1 + data.count(b"\xff\xda", scan_start)
            if scans > MAX_JPEG_SCANS:
                raise _over_budget("JPEG scans", MAX_JPEG_SCANS)
            width, height, blocks = frame
            _check_size("JPEG", width, height)
            return Declared("JPEG", width, height, size - scan_start, blocks // 8 if huffman else 0)
        offset += length
    return None


def _jpeg_frame(body: bytes) -> tuple[int, int, int] | None:
    """(width, height, 8×8 blocks of the smallest component) of a start-of-frame segment."""
    if len(body) < 6:
        return None
    _precision, height, width, count = struct.unpack_from(">BHHB", body)
    components = [body[6 + 3 * i + 1] for i in range(count) if 6 + 3 * i + 2 < len(body)]
    if not components or height == 0:  # height 0 = "defined later" (DNL), which libjpeg does not support
        _check_size("JPEG", width, height)
        return None
    h_max = max(c >> 4 for c in components) or 1
    v_max = max(c & 15 for c in components) or 1
    blocks = min(
        _ceil_div(_ceil_div(width * (c >> 4), h_max), 8) * _ceil_div(_ceil_div(height * (c & 15), v_max), 8)
        for c in components
    )
    return width, height, blocks


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- GIF ---------------------------------------------------------------------------------------------------------
def _gif(data: bytes) -> Declared | None:
    if len(data) < 13:
        return None
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    offset = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    units = 0
    while offset < len(data):
        block = data[offset]
        if block == 0x21:  # extension: label, then sub-blocks up to a zero-length one
            offset += 2
            while offset < len(data):
                units += 1
                if units > MAX_HEADER_UNITS:
                    raise _over_budget("GIF blocks before the first image", MAX_HEADER_UNITS)
                length = data[offset]
                offset += 1 + length
                if length == 0:
                    break
        elif block == 0x2C:  # the first image: Pillow's size covers the screen and the frame
            if offset + 10 > len(data):
                return None
            left, top, frame_w, frame_h, frame_flags = struct.unpack_from("<HHHHB", data, offset + 1)
            width, height = max(width, left + frame_w), max(height, top + frame_h)
            _check_size("GIF", width, height)
            start = offset + 10 + (3 << ((frame_flags & 7) + 1) if frame_flags & 0x80 else 0)
            return Declared("GIF", width, height, len(data) - start, width * height // _LZW_PIXELS_PER_BYTE)
        else:
            return None
    return None


# -- BMP ---------------------------------------------------------------------------------------------------------
def _bmp(data: bytes) -> Declared | None:
    if len(data) < 26:
        return None
    pixel_offset, header_size = struct.unpack_from("<II", data, 10)
    if header_size == 12:  # OS/2 1.x: unsigned 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
        _check_size("BMP", width, height)
        return Declared("BMP", width, height)
    if header_size < 40 or len(data) < 34:
        return None
    width, height, _planes, bits, compression = struct.unpack_from("<iiHHI", data, 18)
    if width <= 0:
        raise _refuse(f"the BMP header declares a width of {width}")
    if height == 0 or height == -(2**31):
        raise _refuse(f"the BMP header declares a height of {height}")
    height = abs(height)
    _check_size("BMP", width, height)
    needed = 0
    if compression in (0, 3, 6) and bits in (1, 2, 4, 8, 16, 24, 32):  # uncompressed rows, padded to 4 bytes
        needed = ((width * bits + 31) // 32) * 4 * height
    return Declared("BMP", width, height, max(0, len(data) - pixel_offset), needed)


# -- TIFF --------------------------------------------------------------------------------------------------------
_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 16: "Q"}  # BYTE, SHORT, LONG, LONG8
_TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _SAMPLES = 256, 257, 258, 259, 277
_STRIP_COUNTS, _STRIP_OFFSETS, _TILE_OFFSETS, _TILE_COUNTS = 279, 273, 324, 325
_TIFF_RATIO = {1: 1, 5: _LZW_PIXELS_PER_BYTE, 8: _DEFLATE_RATIO, 32946: _DEFLATE_RATIO, 32773: 128}


def _tiff(data: bytes) -> Declared | None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        if len(data) < 16:
            return None
        (first,) = struct.unpack_from(order + "Q", data, 8)
        count_format, entry_size, value_size = "Q", 20, 8
    else:
        if len(data) < 8:
            return None
        (first,) = struct.unpack_from(order + "I", data, 4)
        count_format, entry_size, value_size = "H", 12, 4
    count_size = struct.calcsize(count_format)
    if first + count_size > len(data):
        return None
    (entries,) = struct.unpack_from(order + count_format, data, first)
    if entries > MAX_HEADER_UNITS:
        raise _over_budget("TIFF directory entries", MAX_HEADER_UNITS)
    tags: dict[int, tuple[int, int, int]] = {}  # tag -> (type, count, offset of the values)
    for index in range(entries):
        at = first + count_size + index * entry_size
        if at + entry_size > len(data):
            return None
        tag, kind = struct.unpack_from(order + "HH", data, at)
        (count,) = struct.unpack_from(order + ("Q" if big else "I"), data, at + 4)
        inline = _TIFF_SIZES.get(kind, 1) * count <= value_size
        if inline:
            where = at + (12 if big else 8)
        else:
            (where,) = struct.unpack_from(order + ("Q" if big else "I"), data, at + (12 if big else 8))
        tags[tag] = (kind, count, where)
    width, height = _tiff_int(data, order, tags.get(_WIDTH)), _tiff_int(data, order, tags.get(_LENGTH))
    if width is None or height is None:
        return None
    _check_size("TIFF", width, height)
    segments = max(tags.get(_STRIP_OFFSETS, (0, 0, 0))[1], tags.get(_TILE_OFFSETS, (0, 0, 0))[1])
    if segments > MAX_SEGMENTS:
        raise _over_budget("TIFF strips or tiles", MAX_SEGMENTS)
    counts = tags.get(_STRIP_COUNTS) or tags.get(_TILE_COUNTS)
    stored = _tiff_sum(data, order, counts)
    ratio = _TIFF_RATIO.get(_tiff_int(data, order, tags.get(_COMPRESSION)) or 1)
    bits = _tiff_int(data, order, tags.get(_BITS)) or 1
    samples = _tiff_int(data, order, tags.get(_SAMPLES)) or 1
    needed = 0
    if ratio is not None and stored is not None and tags.get(_TILE_OFFSETS) is None:
        needed = height * ((width * bits * samples + 7) // 8) // ratio
    return Declared("TIFF", width, height, min(len(data), stored or 0), needed)


def _tiff_int(data: bytes, order: str, entry: tuple[int, int, int] | None) -> int | None:
    """The first value of a SHORT/LONG/LONG8 tag."""
    if entry is None or entry[0] not in _TIFF_TYPES or entry[1] < 1:
        return None
    kind, _, where = entry
    code = _TIFF_TYPES[kind]
    if where + struct.calcsize(code) > len(data):
        return None
    return int(struct.unpack_from(order + code, data, where)[0])


def _tiff_sum(data: bytes, order: str, entry: tuple[int, int, int] | None) -> int | None:
    """The sum of a SHORT/LONG/LONG8 array tag (strip or tile byte counts); None when unreadable."""
    if entry is None or entry[0] not in _TIFF_TYPES:
        return None
    kind, count, where = entry
    code = _TIFF_TYPES[kind]
    if count > MAX_SEGMENTS or where + count * struct.calcsize(code) > len(data):
        return None
    return sum(struct.unpack_from(f"{order}{count}{code}", data, where))


# -- WebP --------------------------------------------------------------------------------------------------------
def _webp(data: bytes) -> Declared | None:
    """libwebp parses the chunks in C; the budget bounds this loop (one chunk per frame of an animation)."""
    offset, units, size = 12, 0, None
    while offset + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, offset)
        units += 1
        if units > MAX_SEGMENTS:
            raise _over_budget("WebP chunks", MAX_SEGMENTS)
        if kind == b"EXIF" and length > MAX_EXIF_BYTES:
            raise _over_budget("bytes of EXIF", MAX_EXIF_BYTES)
        if size is None:
            size = _webp_size(kind, data[offset + 8 : offset + 8 + min(length, 30)])
        offset += 8 + length + (length & 1)
    if size is None:
        return None
    _check_size("WebP", *size)
    return Declared("WEBP", *size)


def _webp_size(kind: bytes, body: bytes) -> tuple[int, int] | None:
    """The canvas size from a VP8X, VP8 or VP8L chunk."""
    if kind == b"VP8X" and len(body) >= 10:
        return 1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little")
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":  # after the key frame's start code
        width, height = struct.unpack_from("<HH", body, 6)
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:  # the lossless signature
        bits = int.from_bytes(body[1:5], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None
