"""Every argument of every method, of any type: the client refuses what it cannot send
with a TypeError or ValueError naming the argument, at once, and what it sends the server
refuses as INVALID_ARGUMENT (or answers). Never another exception, never a hang, never
memory in proportion to a value."""

from __future__ import annotations

import datetime as dt
import pathlib
import threading
from typing import Any, Callable, Dict

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import QueryService, Store
from holders_client import HoldersClient, HoldersError

# Anything a caller might pass by mistake, or on purpose.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=200),
    st.binary(max_size=64),
    st.lists(st.one_of(st.integers(), st.text(max_size=50), st.none()), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.datetimes(),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.sampled_from(
        [
            "2026-11-15T00:00:00Z",
            "0x" + "ab" * 20,
            "latest",
            "\x00\n\x1b[31m",
            object(),
            b"\xff",
            float("nan"),
            [["0x" + "00" * 20]],
            "9" * 80,
        ]
    ),
)

# The answers a server may give to a bad request: none is INTERNAL or UNKNOWN.
ACCEPTABLE = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}


def drain(result: Any, most: int = 3) -> None:
    """Takes a few items of an iterator, so that lazy calls reach the server."""
    if hasattr(result, "__next__"):
        for _, _item in zip(range(most), result):
            pass


def outcome(call: Callable[[], Any], also: frozenset = frozenset()) -> str:
    """Runs ``call`` with a watchdog; says how it ended. ``also``: further codes the
    server may rightly answer."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            drain(call())
            box["ok"] = True
        except (TypeError, ValueError) as e:
            box["refused"] = e
        except HoldersError as e:
            box["server"] = e
        except BaseException as e:  # noqa: BLE001 - whatever escaped is the finding
            box["other"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the call hung"
    if "other" in box:
        raise AssertionError(f"unexpected {type(box['other']).__name__}: {box['other']}")
    if "server" in box:
        e = box["server"]
        assert e.code in ACCEPTABLE | also, f"{e.code}: {e.details}"
        assert not any(ord(c) < 0x20 for c in e.details), f"control character echoed: {e.details!r}"
        return "server"
    if "refused" in box:
        assert str(box["refused"]), "a refusal says why"
        return "refused"
    return "ok"


METHODS = {
    "top_holders": lambda c, v, k: c.top_holders(**{k: v}) if k else c.top_holders(v),
    "iter_holders": lambda c, v, k: c.iter_holders(**{k: v}) if k else c.iter_holders(v),
    "lookup": lambda c, v, k: c.lookup(["0x" + "00" * 19 + "01"], **{k: v}) if k else c.lookup(v),
    "export_holders": lambda c, v, k: c.export_holders(**{k or "min_balance": v}),
    "transfers": lambda c, v, k: c.transfers(**{k or "address": v}),
    "get_holders": lambda c, v, k: c.get_holders(v),
    "get_top_100_holders": lambda c, v, k: c.get_top_100_holders(v),
    "decode_records": lambda c, v, k: c.decode_records(v),
    "tokens": lambda c, v, k: c.tokens(**{k: v}),
}
KEYWORDS = {
    "top_holders": [None, "at_block", "at_time", "finality", "min_balance", "min_block"],
    "iter_holders": [None, "at_block", "at_time", "finality", "min_balance", "min_block"],
    "lookup": [None, "at_block", "at_time", "finality", "min_block"],
    "export_holders": ["at_block", "at_time", "finality", "min_balance", "min_block"],
    "transfers": ["address", "from_block", "to_block", "page_size", "min_block"],
    "get_holders": [None],
    "get_top_100_holders": [None],
    "decode_records": [None],
    "tokens": ["chain_id", "symbol"],
}
CASES = [(m, k) for m, ks in KEYWORDS.items() for k in ks]


@pytest.mark.parametrize("method,keyword", CASES, ids=[f"{m}-{k}" for m, k in CASES])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=ANYTHING)
def test_any_argument_is_refused_clearly_or_answered(
    store: Store, service: QueryService, method: str, keyword: Any, value: Any
) -> None:
    # A min_block above the store is waited for: a short deadline ends the wait.
    waits = keyword == "min_block"
    also = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}) if waits else frozenset()
    with HoldersClient(service.target, token=store.token, timeout=1 if waits else 10) as client:
        outcome(lambda: METHODS[method](client, value, keyword), also)


@pytest.mark.parametrize("keyword", ["cursor", "from_block", "addresses", "finalized_only", "tokens"])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=ANYTHING)
def test_stream_arguments_are_checked_when_called(
    store: Store, service: QueryService, keyword: str, value: Any
) -> None:
    with HoldersClient(service.target, token=store.token, timeout=10) as client:
        try:
            stream = client.stream_transfers(**{keyword: value})
        except (TypeError, ValueError) as e:
            assert keyword in str(e) or "cursor" in str(e), str(e)
            return
        # Accepted: only a cursor or a token list can still be refused, and the server
        # names it (an empty list is a live stream of the client's token: it waits).
        if keyword in ("cursor", "tokens") and value:
            outcome(lambda: next(stream))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    field=st.sampled_from(["target", "token", "api_key", "timeout", "metadata", "tls"]),
    value=ANYTHING,
)
def test_the_constructor_checks_its_arguments(
    service: QueryService, field: str, value: Any
) -> None:
    kwargs: Dict[str, Any] = {"target": service.target, field: value}
    try:
        HoldersClient(**kwargs).close()
    except (TypeError, ValueError) as e:
        assert field in str(e) or "metadata" in str(e), str(e)


def test_a_time_given_as_text_is_read_not_multiplied(store: Store, client: HoldersClient) -> None:
    """The trial's case: an RFC 3339 string used to be multiplied by 10^9."""
    last = client.top_holders(1)
    assert last.as_of_time is not None
    moment = last.as_of_time
    text = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    by_text = client.top_holders(1, at_time=text)
    by_datetime = client.top_holders(1, at_time=moment)
    by_seconds = client.top_holders(1, at_time=int(moment.timestamp()))
    assert by_text.as_of_block == by_datetime.as_of_block == by_seconds.as_of_block
    offset = moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert client.top_holders(1, at_time=offset).as_of_block == by_text.as_of_block
    for bad in ["yesterday", "2026-11-15", "2026-11-15T00:00:00"]:
        with pytest.raises(ValueError, match="at_time"):
            client.top_holders(1, at_time=bad)
    with pytest.raises(TypeError, match="at_time"):
        client.top_holders(1, at_time=[1])


def test_lists_and_limits(client: HoldersClient) -> None:
    assert client.lookup([]) == []
    with pytest.raises(TypeError, match="addresses"):
        client.lookup("0x" + "00" * 20)
    assert client.get_holders(0) == [] == client.get_top_100_holders(0)
    for call in (lambda: client.get_holders(-1), lambda: client.get_top_100_holders(-1)):
        with pytest.raises(ValueError, match="limit"):
            call()
    with pytest.raises(ValueError, match="limit"):
        client.top_holders(0)
    with pytest.raises(ValueError, match="page_size"):
        client.iter_holders(-5)
    with pytest.raises(TypeError, match="page_size"):
        client.iter_holders("10")


def test_an_api_key_with_a_newline_is_refused(service: QueryService) -> None:
    for bad in ["key\n", "a\r\nb", "k\x00"]:
        with pytest.raises(ValueError, match="api_key"):
            HoldersClient(service.target, api_key=bad)


def test_a_failed_export_leaves_no_half_file(
    store: Store, client: HoldersClient, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "holders.csv"
    with pytest.raises(HoldersError):
        client.export_csv(target, min_balance="not a number")
    assert list(tmp_path.iterdir()) == [], "no file, not even a partial one"
    target.write_text("the previous export\n")
    with pytest.raises(HoldersError):
        client.export_csv(target, at_block=10**15)
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["holders.csv"]
    rows = client.export_csv(target)
    assert rows > 0 and len(target.read_text().splitlines()) == rows + 1
