"""What the client returns: frozen dataclasses with exact amounts (``int``), aware
``datetime``s and ``None`` for absent optional fields, made from the protobuf messages."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Dict, List, Optional

from ._pb.holders.v1 import holders_pb2 as pb


def _time(message: Any, field: str) -> Optional[_dt.datetime]:
    if not message.HasField(field):
        return None
    ts = getattr(message, field)
    return _dt.datetime.fromtimestamp(ts.seconds, tz=_dt.timezone.utc) + _dt.timedelta(
        microseconds=ts.nanos // 1000
    )


def _int(text: str) -> int:
    return int(text) if text else 0


@dataclasses.dataclass(frozen=True)
class Holder:
    """One holder at one moment. ``rank`` is 0 in a lookup (no ranking is read)."""

    address: str
    balance: int
    balance_formatted: str
    share_of_supply_percent: float
    balance_7d_ago: int
    weekly_change_percent: Optional[float]
    last_transfer_block: int
    rank: int

    @classmethod
    def from_pb(cls, h: "pb.Holder") -> "Holder":
        return cls(
            address=h.address,
            balance=_int(h.balance),
            balance_formatted=h.balance_formatted,
            share_of_supply_percent=h.share_of_supply_percent,
            balance_7d_ago=_int(h.balance_7d_ago),
            weekly_change_percent=(
                h.weekly_change_percent if h.HasField("weekly_change_percent") else None
            ),
            last_transfer_block=h.last_transfer_block,
            rank=h.rank,
        )


@dataclasses.dataclass(frozen=True)
class Holders:
    """A ranking or a lookup, and the moment it is as of."""

    holders: List[Holder]
    as_of_block: int
    as_of_time: Optional[_dt.datetime]
    total_supply: int
    holder_count: int
    token: str
    symbol: str
    decimals: int
    as_of_finalized_block: int
    chain_id: int = 0

    @classmethod
    def from_pb(cls, r: "pb.HoldersResponse") -> "Holders":
        return cls(
            holders=[Holder.from_pb(h) for h in r.holders],
            as_of_block=r.as_of_block,
            as_of_time=_time(r, "as_of_time"),
            total_supply=_int(r.total_supply),
            holder_count=r.holder_count,
            token=r.token,
            symbol=r.symbol,
            decimals=r.decimals,
            as_of_finalized_block=r.as_of_finalized_block,
            chain_id=r.chain_id,
        )


@dataclasses.dataclass(frozen=True)
class Transfer:
    """A stored Transfer event. ``from_address`` is the zero address for a mint,
    ``to_address`` for a burn."""

    block_number: int
    block_hash: str
    block_timestamp: Optional[_dt.datetime]
    tx_hash: str
    log_index: int
    from_address: str
    to_address: str
    value: int
    finalized: bool
    token: str = ""
    chain_id: int = 0

    @classmethod
    def from_pb(cls, t: "pb.Transfer") -> "Transfer":
        return cls(
            block_number=t.block_number,
            block_hash=t.block_hash,
            block_timestamp=_time(t, "block_timestamp"),
            tx_hash=t.tx_hash,
            log_index=t.log_index,
            from_address=getattr(t, "from"),
            to_address=t.to,
            value=_int(t.value),
            finalized=t.finalized,
            token=t.token,
            chain_id=t.chain_id,
        )


@dataclasses.dataclass(frozen=True)
class TransferEvent:
    """One event of a stream: a transfer committed, or (``removed``) one a reorg took
    back. Pass ``cursor`` to resume right after it."""

    transfer: Transfer
    cursor: str
    removed: bool

    @classmethod
    def from_pb(cls, e: "pb.TransferEvent") -> "TransferEvent":
        return cls(transfer=Transfer.from_pb(e.transfer), cursor=e.cursor, removed=e.removed)


@dataclasses.dataclass(frozen=True)
class Token:
    """An indexed token and how far its index has come."""

    address: str
    name: str
    symbol: str
    decimals: int
    total_supply: int
    start_block: int
    indexed_block: int
    indexed_time: Optional[_dt.datetime]
    holder_count: int
    transfer_count: int
    finalized_block: int
    safe_block: int
    chain_id: int = 0
    #: False once the token was removed from its ingestor's token set (its data
    #: stays, as of ``indexed_block``).
    following: bool = True

    @classmethod
    def from_pb(cls, t: "pb.Token") -> "Token":
        return cls(
            address=t.address,
            name=t.name,
            symbol=t.symbol,
            decimals=t.decimals,
            total_supply=_int(t.total_supply),
            start_block=t.start_block,
            indexed_block=t.indexed_block,
            indexed_time=_time(t, "indexed_time"),
            holder_count=t.holder_count,
            transfer_count=t.transfer_count,
            finalized_block=t.finalized_block,
            safe_block=t.safe_block,
            chain_id=t.chain_id,
            following=t.following,
        )


def record(item: Any) -> Dict[str, Any]:
    """A dataclass of this module as a dict keyed by its field names."""
    return dataclasses.asdict(item)
