"""The judge <-> candidate wire format: built-in values only, length-prefixed frames (stdlib only, no imports).

Both sides use this file: the judge imports it, the candidate runner gets its source (the sandbox sees no package).
`dumps` accepts exactly None, bool, int, float, complex, str, bytes, list, tuple, set, frozenset and dict (exact
types, never subclasses) and raises TypeError on anything else; `loads` rebuilds exactly those types from bytes
and raises ValueError on anything malformed, too deep or too large, so what the judge holds after decoding is a
plain value whatever the other side sent."""

MAX_DEPTH = 100
MAX_FRAME = 64 << 20

_SIZED = {list: b"l", tuple: b"t", set: b"S", frozenset: b"z"}


def _enc(value, out, depth):
    kind = type(value)
    if depth > MAX_DEPTH:
        raise TypeError("value nested too deeply")
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if value else b"F")
    elif kind is int:
        out.append(b"i%x;" % value if value >= 0 else b"i-%x;" % -value)
    elif kind is float:
        out.append(b"f" + value.hex().encode() + b";")
    elif kind is complex:
        out.append(b"j" + value.real.hex().encode() + b";" + value.imag.hex().encode() + b";")
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data))
        out.append(data)
    elif kind is bytes:
        out.append(b"b%d:" % len(value))
        out.append(value)
    elif kind in _SIZED:
        out.append(_SIZED[kind] + b"%d:" % len(value))
        for item in value:
            _enc(item, out, depth + 1)
    elif kind is dict:
        out.append(b"d%d:" % len(value))
        for key, item in value.items():
            _enc(key, out, depth + 1)
            _enc(item, out, depth + 1)
    else:
        raise TypeError("not a built-in value: " + kind.__name__)


def dumps(value) -> bytes:
    """`value` as bytes; TypeError when it (or anything inside it) is not an exact built-in type."""
    out = []
    _enc(value, out, 0)
    return b"".join(out)


def _until(data, pos, stop, window=1 << 20):
    end = data.find(stop, pos, pos + window)
    if end < 0:
        raise ValueError("malformed value")
    return data[pos:end], end + 1


def _dec(data, pos, depth):
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    tag = data[pos:pos + 1]
    pos += 1
    if tag == b"N":
        return None, pos
    if tag == b"T":
        return True, pos
    if tag == b"F":
        return False, pos
    if tag == b"i":
        text, pos = _until(data, pos, b";")
        return int(text, 16), pos
    if tag == b"f":
        text, pos = _until(data, pos, b";")
        return float.fromhex(text.decode("ascii")), pos
    if tag == b"j":
        real, pos = _until(data, pos, b";")
        imag, pos = _until(data, pos, b";")
        return complex(float.fromhex(real.decode("ascii")), float.fromhex(imag.decode("ascii"))), pos
    text, pos = _until(data, pos, b":", 24)
    if not text.isdigit():
        raise ValueError("malformed length")
    count = int(text)
    if tag in (b"s", b"b"):
        if pos + count > len(data):
            raise ValueError("truncated value")
        raw = data[pos:pos + count]
        return (raw.decode("utf-8", "surrogatepass") if tag == b"s" else bytes(raw)), pos + count
    if count > len(data) - pos:
        raise ValueError("truncated value")
    if tag == b"d":
        result = {}
        for _ in range(count):
            key, pos = _dec(data, pos, depth + 1)
            result[key], pos = _dec(data, pos, depth + 1)
        return result, pos
    items = []
    for _ in range(count):
        item, pos = _dec(data, pos, depth + 1)
        items.append(item)
    if tag == b"l":
        return items, pos
    if tag == b"t":
        return tuple(items), pos
    if tag == b"S":
        return set(items), pos
    if tag == b"z":
        return frozenset(items), pos
    raise ValueError("unknown tag")


def loads(data: bytes):
    """The value `data` encodes; ValueError when it is malformed or does not end where the value ends."""
    try:
        value, end = _dec(memoryview(data).tobytes() if type(data) is not bytes else data, 0, 0)
    except (TypeError, UnicodeError, OverflowError, IndexError, RecursionError) as error:
        raise ValueError("malformed value: " + type(error).__name__) from None
    if end != len(data):
        raise ValueError("trailing bytes after the value")
    return value


def write_frame(os_write, fd, payload: bytes) -> None:
    """Send one frame: 8 hex digits of length, then the payload."""
    data = b"%08x" % len(payload) + payload
    while data:
        data = data[os_write(fd, data):]
