"""Checks of every argument the client's methods take, before anything is sent. A value of
the wrong type is a ``TypeError`` naming the argument; a value of the right type out of
range is a ``ValueError`` naming it; either is raised at once, without building anything
in proportion to the value (a string is never multiplied, an iterable never walked past
the limit the server allows)."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Iterable, List, Optional

# The server's limits (query-service/src/input.rs); checked here too, so that a wrong value
# fails before a round trip and a huge one is never materialised.
MAX_ADDRESSES_PER_CALL = 1000
# Lookups are split into calls of MAX_ADDRESSES_PER_CALL; this bounds a whole lookup.
MAX_LOOKUP = 1_000_000
MAX_UINT64 = 2**64 - 1
# Block numbers: the server keeps them as BIGINT.
MAX_INT64 = 2**63 - 1
MAX_UINT32 = 2**32 - 1
# Seconds since 1970 the server's Timestamp accepts (0001-01-01 .. 9999-12-31).
MAX_UNIX_SECONDS = 253_402_300_799


def _kind(value: Any) -> str:
    return type(value).__name__


def integer(name: str, value: Any, *, low: int = 0, high: int = MAX_UINT64) -> int:
    """An ``int`` (not a ``bool``) in ``low..=high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {_kind(value)}")
    if value < low or value > high:
        raise ValueError(f"{name}: {value} is outside {low}..{high}")
    return value


def optional_integer(
    name: str, value: Any, *, low: int = 0, high: int = MAX_UINT64
) -> Optional[int]:
    return None if value is None else integer(name, value, low=low, high=high)


def text(name: str, value: Any, *, max_len: int = 1000) -> str:
    """A ``str`` without control characters, at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a str, got {_kind(value)}")
    if len(value) > max_len:
        raise ValueError(f"{name}: {len(value)} characters; at most {max_len}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{name}: holds a control character (a newline, NUL, ESC, ...)")
    return value


def optional_text(name: str, value: Any, *, max_len: int = 1000) -> str:
    return "" if value is None else text(name, value, max_len=max_len)


def addresses(name: str, value: Any, *, limit: int = MAX_LOOKUP) -> List[str]:
    """A list (or any iterable but a string) of address strings, at most ``limit``."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{name}: expected a list of addresses, got one {_kind(value)}; wrap it in [ ]")
    if not isinstance(value, Iterable):
        raise TypeError(f"{name}: expected a list of addresses, got {_kind(value)}")
    out: List[str] = []
    for i, a in enumerate(value):
        if i >= limit:
            raise ValueError(f"{name}: more than {limit} addresses")
        out.append(text(f"{name}[{i}]", a, max_len=100))
    return out


def amount(name: str, value: Any) -> str:
    """A balance in base units: an ``int`` or a decimal ``str``; "" for None. The range is
    the server's to judge (it names the field); only the size is bounded here."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name}: expected an int or a decimal str of base units, got {_kind(value)}")
    if isinstance(value, int):
        if value.bit_length() > 300:
            raise ValueError(f"{name}: outside 0..2^256-1")
        return str(value)
    return text(name, value, max_len=100)


def moment(name: str, value: Any) -> Optional[_dt.datetime]:
    """A point in time: an aware ``datetime``, Unix seconds (``int`` or finite ``float``),
    or an RFC 3339 string (``2026-11-15T00:00:00Z``); None passes."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(f"{name}: a naive datetime; give it a timezone (UTC, say)")
        return value.astimezone(_dt.timezone.utc)
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a datetime, Unix seconds or an RFC 3339 str, got bool")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}: {value} is not a time")
        if value < 0 or value > MAX_UNIX_SECONDS:
            raise ValueError(f"{name}: {value} Unix seconds is outside 1970..9999")
        return _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(seconds=value)
    if isinstance(value, str):
        return _rfc3339(name, value)
    raise TypeError(f"{name}: expected a datetime, Unix seconds or an RFC 3339 str, got {_kind(value)}")


def _rfc3339(name: str, value: str) -> _dt.datetime:
    # fromisoformat before Python 3.11 reads neither "Z" nor every RFC 3339 form.
    text(name, value, max_len=64)
    s = value.strip()
    if s[-1:] in ("Z", "z"):
        s = s[:-1] + "+00:00"
    try:
        parsed = _dt.datetime.fromisoformat(s.replace("t", "T", 1) if "t" in s[:11] else s)
    except ValueError:
        raise ValueError(
            f"{name}: {value!r} is not an RFC 3339 time (like 2026-11-15T00:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: {value!r} has no offset; end it with Z or +hh:mm")
    return moment(name, parsed)  # type: ignore[return-value]


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {_kind(value)}")
    return value


def seconds(name: str, value: Any) -> Optional[float]:
    """A timeout in seconds (> 0, finite) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected seconds as an int or float, got {_kind(value)}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: {value} is not a positive number of seconds")
    return float(value)
