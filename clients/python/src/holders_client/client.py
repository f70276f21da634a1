"""``HoldersClient``: the query-service's holders.v1 API as Python calls. Every unary call
has a deadline (``timeout``); streams (exports, live transfers) have none. Whatever the
server refuses surfaces as :class:`HoldersError`."""

from __future__ import annotations

import os
import time
from typing import (
    IO,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import grpc

from . import args as _args
from ._pb.holders.v1 import holders_pb2 as pb
from ._pb.holders.v1 import holders_pb2_grpc as pb_grpc
from .csvfile import CSV_HEADER, write_csv, write_csv_file
from .errors import HoldersError
from .models import Holder, Holders, Token, Transfer, TransferEvent, record
from .moment import Finality, FinalityLike, TimeLike, pin, set_moment

# Addresses per lookup request: larger lists go in several, pinned to one block.
_LOOKUP_CHUNK = 1000


AmountLike = Union[int, str, None]


class HoldersClient:
    """A client of one query-service.

    ``target`` is ``host:port``; ``token`` the ERC-20 every call asks about (``None``: the
    service's only token) and ``chain_id`` its chain (``None``: the only chain holding
    it); ``api_key`` is sent as ``authorization: Bearer <key>`` with every
    call (services started with ``--api-keys-file``); ``tls``/``root_certificates`` turn on
    TLS, and ``client_certificate``/``client_key`` (PEM, bytes or a path) present this
    client's certificate to a service that asks for one (``--tls-client-ca``); ``metadata``
    pairs sent with every call; ``timeout`` the deadline of each unary call, in seconds
    (the service stops its database work at that deadline too). Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        token: Optional[str] = None,
        tls: bool = False,
        root_certificates: Union[bytes, str, "os.PathLike[str]", None] = None,
        client_certificate: Union[bytes, str, "os.PathLike[str]", None] = None,
        client_key: Union[bytes, str, "os.PathLike[str]", None] = None,
        api_key: Optional[str] = None,
        chain_id: Optional[int] = None,
        metadata: Optional[Sequence[Tuple[str, str]]] = None,
        timeout: Optional[float] = 30.0,
    ) -> None:
        _args.text("target", target, max_len=1000)
        token = _args.optional_text("token", token, max_len=100)
        chain_id = _args.optional_integer("chain_id", chain_id, high=_args.MAX_INT64)
        api_key = _args.optional_text("api_key", api_key, max_len=4096)
        timeout = _args.seconds("timeout", timeout)
        _args.flag("tls", tls)
        for name, value in (
            ("root_certificates", root_certificates),
            ("client_certificate", client_certificate),
            ("client_key", client_key),
        ):
            if value is not None and not isinstance(value, (bytes, str, os.PathLike)):
                raise TypeError(f"{name}: expected PEM bytes or a path, got {type(value).__name__}")
        pairs = []
        if metadata is not None and (
            isinstance(metadata, (str, bytes, dict)) or not isinstance(metadata, Iterable)
        ):
            raise TypeError(
                f"metadata: expected a list of (key, value) pairs, got {type(metadata).__name__}"
            )
        for i, pair in enumerate(metadata or []):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"metadata[{i}]: expected a (key, value) pair")
            pairs.append((_args.text(f"metadata[{i}] key", pair[0]), _args.text(f"metadata[{i}] value", pair[1], max_len=8192)))
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together")
        if tls or root_certificates is not None or client_certificate is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_certificates),
                private_key=_pem(client_key),
                certificate_chain=_pem(client_certificate),
            )
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.HolderServiceStub(self._channel)
        self.target = target
        self.token = token or ""
        # 0: the only chain that holds the token.
        self.chain_id = chain_id or 0
        self.metadata = pairs
        if api_key:
            self.metadata.append(("authorization", f"Bearer {api_key}"))
        self.timeout = timeout

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "HoldersClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- holders -----------------------------------------------------------------------

    def top_holders(
        self,
        limit: int = 100,
        *,
        at_block: Optional[int] = None,
        at_time: TimeLike = None,
        finality: FinalityLike = None,
        min_balance: AmountLike = None,
        min_block: Optional[int] = None,
    ) -> Holders:
        """The ``limit`` richest holders (1 to 10,000) as of one moment."""
        limit = _args.integer("limit", limit, low=1, high=_args.MAX_UINT32)
        request = pb.GetTopHoldersRequest(
            limit=limit,
            token=self.token,
            chain_id=self.chain_id,
            min_balance=_args.amount("min_balance", min_balance),
        )
        set_moment(request, at_block, at_time, finality, min_block)
        return Holders.from_pb(self._unary("GetTopHolders", request))

    def iter_holders(
        self,
        page_size: int = 1000,
        *,
        at_block: Optional[int] = None,
        at_time: TimeLike = None,
        finality: FinalityLike = None,
        min_balance: AmountLike = None,
        min_block: Optional[int] = None,
    ) -> Iterator[Holder]:
        """Every holder, richest first, a page at a time. Every page is as of the first
        page's block, however far the index moves meanwhile."""
        page_size = _args.integer("page_size", page_size, low=1, high=_args.MAX_UINT32)
        request = pb.GetHoldersRequest(
            page_size=page_size,
            token=self.token,
            chain_id=self.chain_id,
            min_balance=_args.amount("min_balance", min_balance),
        )
        set_moment(request, at_block, at_time, finality, min_block)
        return self._ranking_pages(request)

    def _ranking_pages(self, request: Any) -> Iterator[Holder]:
        while True:
            page = self._unary("GetHolders", request)
            for h in page.holders:
                yield Holder.from_pb(h)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token
            pin(request, page.as_of_block)

    def lookup(
        self,
        addresses: Iterable[str],
        *,
        at_block: Optional[int] = None,
        at_time: TimeLike = None,
        finality: FinalityLike = None,
        min_block: Optional[int] = None,
    ) -> List[Holder]:
        """These addresses as holders (zero balances included; ``rank`` is 0), all as of
        one moment, richest first."""
        wanted = _args.addresses("addresses", addresses)
        request = pb.GetHoldersRequest(token=self.token, chain_id=self.chain_id)
        set_moment(request, at_block, at_time, finality, min_block)
        found: List[Holder] = []
        # No address, no holder: an empty list is not "the whole ranking".
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            del request.addresses[:]
            request.addresses.extend(wanted[start : start + _LOOKUP_CHUNK])
            answer = self._unary("GetHolders", request)
            found.extend(Holder.from_pb(h) for h in answer.holders)
            pin(request, answer.as_of_block)
        if len(wanted) > _LOOKUP_CHUNK:
            found.sort(key=lambda h: (-h.balance, h.address.lower()))
        return found

    def export_holders(
        self,
        *,
        at_block: Optional[int] = None,
        at_time: TimeLike = None,
        finality: FinalityLike = None,
        min_balance: AmountLike = None,
        min_block: Optional[int] = None,
    ) -> Iterator[Holder]:
        """Every holder of one moment, ranked, from one snapshot (ExportHolders): the
        server streams chunks of up to 10,000; stop iterating to cancel."""
        request = pb.ExportHoldersRequest(
            token=self.token,
            chain_id=self.chain_id,
            min_balance=_args.amount("min_balance", min_balance),
        )
        set_moment(request, at_block, at_time, finality, min_block)
        return self._export_rows(request)

    def _export_rows(self, request: Any) -> Iterator[Holder]:
        for chunk in self._stream("ExportHolders", request):
            for h in chunk.holders:
                yield Holder.from_pb(h)

    def export_csv(
        self,
        file: Union[str, "os.PathLike[str]", IO[str]],
        *,
        at_block: Optional[int] = None,
        at_time: TimeLike = None,
        finality: FinalityLike = None,
        min_balance: AmountLike = None,
        min_block: Optional[int] = None,
    ) -> int:
        """Writes every holder of one moment as CSV (a path, or a text file opened with
        ``newline=""``): header ``rank,address,balance,balance_formatted,
        share_of_supply_percent``, balances in base units. Returns the rows written."""
        holders = self.export_holders(
            at_block=at_block,
            at_time=at_time,
            finality=finality,
            min_balance=min_balance,
            min_block=min_block,
        )
        if isinstance(file, (str, os.PathLike)):
            return write_csv_file(os.fspath(file), holders)
        if not hasattr(file, "write"):
            raise TypeError(f"file: expected a path or a text file, got {type(file).__name__}")
        return write_csv(file, holders)

    # -- transfers ---------------------------------------------------------------------

    def transfers(
        self,
        address: Optional[str] = None,
        from_block: Optional[int] = None,
        to_block: Optional[int] = None,
        page_size: int = 1000,
        *,
        min_block: Optional[int] = None,
    ) -> Iterator[Transfer]:
        """Stored transfers, newest first, optionally of one address (sender or
        receiver) and within a block range (inclusive)."""
        address = _args.optional_text("address", address, max_len=100)
        page_size = _args.integer("page_size", page_size, low=1, high=_args.MAX_UINT32)
        from_block = _args.optional_integer("from_block", from_block, high=_args.MAX_INT64)
        to_block = _args.optional_integer("to_block", to_block, high=_args.MAX_INT64)
        min_block = _args.optional_integer("min_block", min_block, high=_args.MAX_INT64)
        request = pb.ListTransfersRequest(
            address=address, page_size=page_size, token=self.token, chain_id=self.chain_id
        )
        if from_block is not None:
            request.from_block = from_block
        if to_block is not None:
            request.to_block = to_block
        if min_block is not None:
            request.min_block = min_block
        return self._transfer_pages(request)

    def _transfer_pages(self, request: Any) -> Iterator[Transfer]:
        while True:
            page = self._unary("ListTransfers", request)
            for t in page.transfers:
                yield Transfer.from_pb(t)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def stream_transfers(
        self,
        cursor: Optional[str] = None,
        from_block: Optional[int] = None,
        addresses: Optional[Iterable[str]] = None,
        finalized_only: bool = False,
        *,
        tokens: Optional[Iterable[str]] = None,
        reconnect_for: float = 60.0,
    ) -> Iterator[TransferEvent]:
        """Every transfer from ``cursor`` (or ``from_block``; neither: live only), then
        each new one as it is committed, in order, once. When the server ends the stream
        as UNAVAILABLE (a restart, a rollout) it resumes after the last event's cursor by
        itself, retrying for up to ``reconnect_for`` seconds before it raises.

        ``tokens``: several tokens of one chain in one stream (at most 1000, besides the
        client's own token if it has one); each event's ``transfer.token`` says whose it
        is, and its cursor resumes a stream of the same list."""
        listed = [] if tokens is None else _args.addresses(
            "tokens", tokens, limit=_args.MAX_ADDRESSES_PER_CALL
        )
        # A cursor of a list of tokens holds each token's position.
        last = _args.optional_text("cursor", cursor, max_len=1000 + 16 * len(listed))
        from_block = _args.optional_integer("from_block", from_block, high=_args.MAX_INT64)
        wanted = [] if addresses is None else _args.addresses(
            "addresses", addresses, limit=_args.MAX_ADDRESSES_PER_CALL
        )
        _args.flag("finalized_only", finalized_only)
        reconnect_for = _args.seconds("reconnect_for", reconnect_for) or 0.0
        if last and from_block is not None:
            raise ValueError("cursor and from_block: give one of them, not both")
        return self._follow(last, from_block, wanted, listed, finalized_only, reconnect_for)

    def _follow(
        self,
        last: str,
        from_block: Optional[int],
        wanted: List[str],
        listed: List[str],
        finalized_only: bool,
        reconnect_for: float,
    ) -> Iterator[TransferEvent]:
        failing_since: Optional[float] = None
        pause = 0.1
        while True:
            request = pb.StreamTransfersRequest(
                cursor=last,
                addresses=wanted,
                tokens=listed,
                token=self.token,
                chain_id=self.chain_id,
                finalized_only=finalized_only,
            )
            if not last and from_block is not None:
                request.from_block = from_block
            call = self._stub.StreamTransfers(request, metadata=self.metadata)
            try:
                for event in call:
                    failing_since, pause = None, 0.1
                    out = TransferEvent.from_pb(event)
                    last = out.cursor
                    yield out
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise HoldersError.from_rpc(e, "StreamTransfers") from None
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since > reconnect_for:
                    raise HoldersError.from_rpc(e, "StreamTransfers") from None
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            finally:
                call.cancel()

    # -- tokens ------------------------------------------------------------------------

    def tokens(
        self, *, chain_id: Optional[int] = None, symbol: Optional[str] = None
    ) -> List[Token]:
        """Every indexed token (of one chain, or with one symbol, any case) and how far its
        index has come, all pages walked."""
        request = pb.ListTokensRequest(
            page_size=1000,
            chain_id=_args.optional_integer("chain_id", chain_id) or 0,
            symbol=_args.optional_text("symbol", symbol, max_len=100),
        )
        out: List[Token] = []
        while True:
            page = self._unary("ListTokens", request)
            out.extend(Token.from_pb(t) for t in page.tokens)
            if not page.next_page_token:
                return out
            request.page_token = page.next_page_token

    # -- the seed script's Engineering names ---------------------------------------------

    def get_holders(self, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """Every holder (or the first ``limit``), richest first, as dicts."""
        out: List[Dict[str, Any]] = []
        limit = _args.optional_integer("limit", limit, high=2**63 - 1)
        if limit == 0:
            return out
        page = min(limit, 10_000) if limit is not None else 1000
        for h in self.iter_holders(page_size=page):
            out.append(record(h))
            if limit is not None and len(out) >= limit:
                break
        return out

    def get_top_100_holders(self, limit: int = 100) -> List[Dict[str, Any]]:
        """The ``limit`` richest holders as dicts (0: none, as :meth:`get_holders`)."""
        limit = _args.integer("limit", limit, high=_args.MAX_UINT32)
        if limit == 0:
            return []
        return self.decode_records(self.top_holders(limit).holders)

    @staticmethod
    def decode_records(holders: Iterable[Union[Holder, Dict[str, Any]]]) -> List[Dict[str, Any]]:
        """Holders as dicts keyed by their field names (dicts pass through)."""
        if isinstance(holders, (str, bytes)) or not isinstance(holders, Iterable):
            raise TypeError(f"holders: expected holders or dicts, got {type(holders).__name__}")
        out: List[Dict[str, Any]] = []
        for i, h in enumerate(holders):
            if isinstance(h, dict):
                out.append(h)
            elif isinstance(h, Holder):
                out.append(record(h))
            else:
                raise TypeError(f"holders[{i}]: expected a Holder or a dict, got {type(h).__name__}")
        return out

    # -- plumbing ----------------------------------------------------------------------

    def _unary(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=self.timeout, metadata=self.metadata
            )
        except grpc.RpcError as e:
            raise HoldersError.from_rpc(e, method) from None

    def _stream(self, method: str, request: Any) -> Iterator[Any]:
        call = getattr(self._stub, method)(request, metadata=self.metadata)
        try:
            yield from call
        except grpc.RpcError as e:
            raise HoldersError.from_rpc(e, method) from None
        finally:
            # A caller that stops early frees the server's snapshot at once.
            call.cancel()


class Engineering(HoldersClient):
    """The seed script's class name, for a drop-in move: ``get_holders``,
    ``get_top_100_holders`` and ``decode_records`` work as they did."""


def _pem(certificates: Union[bytes, str, "os.PathLike[str]", None]) -> Optional[bytes]:
    if certificates is None or isinstance(certificates, bytes):
        return certificates
    with open(certificates, "rb") as f:
        return f.read()
