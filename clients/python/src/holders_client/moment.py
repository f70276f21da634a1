"""The moment a holders call is as of (``at_block``, ``at_time``, ``finality``, with
``min_block``), checked and set on a request; and ``Finality``."""

from __future__ import annotations

import datetime as _dt
import enum
from typing import Any, Optional, Union

from google.protobuf import timestamp_pb2

from . import args as _args


class Finality(enum.IntEnum):
    """Which block an answer is as of: the newest indexed, or the chain's safe or
    finalized one."""

    LATEST = 0
    SAFE = 1
    FINALIZED = 2


FinalityLike = Union[Finality, str, int, None]
TimeLike = Union[_dt.datetime, int, float, str, None]


def finality_of(value: FinalityLike) -> int:
    if value is None:
        return Finality.LATEST
    if isinstance(value, str):
        try:
            return Finality[value.upper()]
        except KeyError:
            raise ValueError(
                f"finality: {value[:40]!r} is not one of latest, safe, finalized"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"finality: expected a Finality, a str or an int, got {type(value).__name__}")
    try:
        return Finality(value)
    except ValueError:
        raise ValueError(f"finality: {value} is none of 0 (latest), 1 (safe), 2 (finalized)") from None


def set_moment(
    request: Any,
    at_block: Optional[int],
    at_time: TimeLike,
    finality: FinalityLike,
    min_block: Optional[int] = None,
) -> None:
    request.finality = finality_of(finality)
    min_block = _args.optional_integer("min_block", min_block, high=_args.MAX_INT64)
    at_block = _args.optional_integer("at_block", at_block, high=_args.MAX_INT64)
    when = _args.moment("at_time", at_time)
    if min_block is not None:
        # Served only by a store that holds this block (another replica's as_of_block).
        request.min_block = min_block
    if at_block is not None:
        request.at_block = at_block
    if when is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(when)
        request.at_time.CopyFrom(ts)


def pin(request: Any, block: int) -> None:
    """The next requests ask for the block the first answer was as of."""
    request.ClearField("at_time")
    request.finality = Finality.LATEST
    request.at_block = block
