"""The Python client against the real query-service over a real store: every answer is
checked against the chain (``balanceOf``, ``totalSupply()``, ``eth_getLogs``) at the block
the answer says it is as of."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import pathlib
import queue
import subprocess
import threading
from typing import Dict, List

import grpc
import pytest

from conftest import ROOT, Chain, QueryService, Store, wait_indexed
from holders_client import (
    CSV_HEADER,
    Engineering,
    Finality,
    Holder,
    HoldersClient,
    HoldersError,
    TransferEvent,
)

ZERO = "0x" + "00" * 20


def held(balances: Dict[str, int]) -> List[tuple]:
    """(address, balance) of every holder, richest first, ties by address."""
    return sorted(((a, b) for a, b in balances.items() if b > 0), key=lambda p: (-p[1], p[0]))


def ranked(holders: List[Holder]) -> List[tuple]:
    return [(h.address.lower(), h.balance) for h in holders]


def middle_block(store: Store, client: HoldersClient) -> int:
    """A block in the middle of the history that holds transfers."""
    blocks = sorted({t.block_number for t in client.transfers(page_size=500)})
    return blocks[len(blocks) // 2]


def test_top_holders_are_the_chain_s_richest(store: Store, client: HoldersClient) -> None:
    top = client.top_holders(10_000)
    chain = store.chain.balances(store.addresses, top.as_of_block)
    assert ranked(top.holders) == held(chain)
    assert [h.rank for h in top.holders] == list(range(1, len(top.holders) + 1))
    assert top.holder_count == len(held(chain))
    assert top.total_supply == store.chain.total_supply(top.as_of_block)
    assert top.token.lower() == store.token.lower() and top.decimals == 18 and top.symbol
    assert top.as_of_time is not None and top.as_of_time.tzinfo is not None
    first = top.holders[0]
    assert first.address != first.address.lower(), "EIP-55 mixed case"
    assert isinstance(first.balance, int) and isinstance(first.balance_7d_ago, int)
    assert abs(first.share_of_supply_percent - 100 * first.balance / top.total_supply) < 1e-9
    assert dataclasses.is_dataclass(first)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.balance = 0  # type: ignore[misc]


def test_iter_holders_pages_stay_at_the_first_page_s_block(
    store: Store, client: HoldersClient
) -> None:
    before = next(t for t in client.tokens()).indexed_block
    pages = client.iter_holders(page_size=7)
    got = [next(pages) for _ in range(7)]
    # The index moves on while the caller is between pages.
    top = client.top_holders(1)
    rich = top.holders[0].address
    chain = store.chain
    chain.transfer(rich, store.addresses[-1], top.holders[0].balance // 3)
    moved = chain.mine()
    wait_indexed(client, moved)
    got.extend(pages)
    expected = held(chain.balances(store.addresses, before))
    assert ranked(got) == expected, "every holder once, as of the first page's block"
    assert [h.rank for h in got] == list(range(1, len(expected) + 1))
    assert ranked(list(client.iter_holders(page_size=1000))) == held(
        chain.balances(store.addresses, moved)
    ), "a new iteration sees the new block"


def test_lookup_at_a_past_block_and_time(store: Store, client: HoldersClient) -> None:
    at = middle_block(store, client)
    found = client.lookup(store.addresses, at_block=at)
    chain = store.chain.balances(store.addresses, at)
    assert {h.address.lower(): h.balance for h in found} == chain
    assert all(h.rank == 0 for h in found)
    assert [h.balance for h in found] == sorted((h.balance for h in found), reverse=True)
    # The same block by its time.
    when = client.top_holders(1, at_block=at).as_of_time
    assert when is not None
    by_time = client.top_holders(5, at_time=when)
    assert by_time.as_of_block == at
    assert ranked(by_time.holders) == held(chain)[:5]
    assert client.top_holders(5, at_time=when.timestamp()).as_of_block == at


def test_export_csv_at_a_past_block_equals_balance_of(
    store: Store, client: HoldersClient, tmp_path: pathlib.Path
) -> None:
    at = middle_block(store, client)
    path = tmp_path / "holders.csv"
    rows = client.export_csv(path, at_block=at)
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_HEADER
    expected = held(store.chain.balances(store.addresses, at))
    assert rows == len(table) - 1 == len(expected)
    assert [(r[1].lower(), int(r[2])) for r in table[1:]] == expected
    assert [int(r[0]) for r in table[1:]] == list(range(1, rows + 1))
    supply = store.chain.total_supply(at)
    for r in table[1:]:
        assert abs(float(r[4]) - 100 * int(r[2]) / supply) < 1e-9
        assert int(r[3].replace(".", "").ljust(len(r[3].split(".")[0]) + 18, "0")) == int(r[2])
    # A file object works too, and a filter keeps the head.
    cut = expected[2][1]
    with open(tmp_path / "rich.csv", "w", newline="") as f:
        assert client.export_csv(f, at_block=at, min_balance=cut) == sum(
            1 for _, b in expected if b >= cut
        )


def test_grpcurl_exports_every_holder_at_a_past_block(
    store: Store, client: HoldersClient, service: QueryService
) -> None:
    grpcurl = ROOT / ".tools" / "bin" / "grpcurl"
    if not grpcurl.exists():
        pytest.fail(f"{grpcurl} is missing: scripts/tools.sh installs it")
    at = middle_block(store, client)
    out = subprocess.run(
        [str(grpcurl), "-plaintext", "-d", json.dumps({"token": store.token, "at_block": at}),
         service.target, "holders.v1.HolderService/ExportHolders"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    decoder, chunks, i = json.JSONDecoder(), [], 0
    while i < len(out):
        if out[i].isspace():
            i += 1
            continue
        chunk, i = decoder.raw_decode(out, i)
        chunks.append(chunk)
    assert chunks and all(int(c["asOfBlock"]) == at for c in chunks)
    got = [(h["address"].lower(), int(h["balance"])) for c in chunks for h in c["holders"]]
    assert got == held(store.chain.balances(store.addresses, at))


def test_min_balance_and_holder_count_at_the_head_and_in_the_past(
    store: Store, client: HoldersClient
) -> None:
    for at in (None, middle_block(store, client)):
        whole = client.top_holders(10_000, at_block=at)
        chain = held(store.chain.balances(store.addresses, whole.as_of_block))
        assert whole.holder_count == len(chain)
        cut = chain[3][1]
        rich = client.top_holders(10_000, at_block=at, min_balance=cut)
        expected = [p for p in chain if p[1] >= cut]
        assert rich.holder_count == len(expected)
        assert rich.holders == whole.holders[: len(expected)], "the head, ranks kept"
        assert ranked(list(client.iter_holders(page_size=2, at_block=whole.as_of_block,
                                                min_balance=str(cut)))) == expected
        assert ranked(list(client.export_holders(at_block=whole.as_of_block,
                                                  min_balance=cut))) == expected


def test_transfers_are_the_chain_s_logs(store: Store, client: HoldersClient) -> None:
    lo, hi = store.start_block, store.end_block
    # The history also emits logs with the Transfer topic in an ERC-721 shape (4 topics):
    # not ERC-20 transfers, and not served.
    every = store.chain.logs(lo, hi)
    logs = [l for l in every if len(l["topics"]) == 3]
    assert len(every) - len(logs) == store.info["rejected_logs"] > 0
    keys = [(int(l["blockNumber"], 16), int(l["logIndex"], 16)) for l in logs]
    got = list(client.transfers(from_block=lo, to_block=hi, page_size=7))
    assert [(t.block_number, t.log_index) for t in got] == sorted(keys, reverse=True)
    assert all(t.block_timestamp is not None and t.block_timestamp.tzinfo for t in got)
    who = store.addresses[3]
    topic = "0x" + who[2:].lower().rjust(64, "0")
    mine = [k for k, l in zip(keys, logs) if topic in l["topics"][1:3]]
    theirs = list(client.transfers(address=who, from_block=lo, to_block=hi, page_size=3))
    assert sorted((t.block_number, t.log_index) for t in theirs) == sorted(mine)
    assert all(who.lower() in (t.from_address.lower(), t.to_address.lower()) for t in theirs)


def test_a_stream_of_a_token_list_resumes_by_its_cursor(store: Store, client: HoldersClient) -> None:
    stored = next(t for t in client.tokens()).transfer_count
    first = []
    for e in client.stream_transfers(from_block=store.start_block, tokens=[store.token]):
        first.append(e)
        if len(first) == stored // 2:
            break
    assert all(e.transfer.token.lower() == store.token.lower() for e in first)
    rest = []
    for e in client.stream_transfers(cursor=first[-1].cursor, tokens=[store.token]):
        rest.append(e)
        if len(first) + len(rest) == stored:
            break
    order = [(e.transfer.block_number, e.transfer.log_index) for e in first + rest]
    assert order == sorted(order) and len(set(order)) == stored, "no gap, no repeat"
    with pytest.raises(HoldersError) as refused:
        next(iter(client.stream_transfers(cursor=first[-1].cursor)))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details.startswith("cursor"), refused.value.details


def test_a_stream_resumes_across_a_restart_of_the_query_service(
    store: Store, client: HoldersClient, service: QueryService
) -> None:
    stored = next(t for t in client.tokens()).transfer_count
    events: "queue.Queue[object]" = queue.Queue()

    def read() -> None:
        try:
            for e in client.stream_transfers(from_block=store.start_block):
                events.put(e)
        except Exception as e:  # noqa: BLE001 - handed to the test
            events.put(e)

    threading.Thread(target=read, daemon=True).start()

    def take(n: int) -> List[TransferEvent]:
        out = []
        for _ in range(n):
            e = events.get(timeout=60)
            assert isinstance(e, TransferEvent), f"the stream failed: {e}"
            out.append(e)
        return out

    replay = take(stored)
    order = [(e.transfer.block_number, e.transfer.log_index) for e in replay]
    assert order == sorted(order) and len(set(order)) == stored
    chain = store.chain
    rich = client.top_holders(2).holders
    # Down: the stream ends UNAVAILABLE and the client keeps trying; transfers go on.
    service.stop()
    sent = [chain.transfer(rich[0].address, store.addresses[5], 11)]
    sent.append(chain.transfer(rich[1].address, store.addresses[6], 12))
    chain.mine()
    service.start()
    sent.append(chain.transfer(rich[0].address, store.addresses[7], 13))
    chain.mine()
    after = take(3)
    assert [e.transfer.tx_hash.lower() for e in after] == [h.lower() for h in sent]
    assert [e.transfer.value for e in after] == [11, 12, 13]
    assert not any(e.removed for e in after)
    assert events.empty(), "nothing twice"


def test_tokens(store: Store, client: HoldersClient) -> None:
    token = next(t for t in client.tokens() if t.address.lower() == store.token.lower())
    assert token.start_block == store.start_block and token.indexed_block >= store.end_block
    chain = held(store.chain.balances(store.addresses, token.indexed_block))
    assert token.holder_count == len(chain)
    assert token.total_supply == store.chain.total_supply(token.indexed_block)
    assert token.indexed_time is not None and token.indexed_time.tzinfo is not None
    assert token.transfer_count >= store.info["transfers"]
    chain_id = int(store.chain.rpc("eth_chainId", []), 16)
    assert token.chain_id == chain_id
    assert token.following is True, "its ingestor indexes it"
    assert client.tokens(chain_id=chain_id) == client.tokens()
    assert client.tokens(chain_id=chain_id + 1) == []
    assert [t.address for t in client.tokens(symbol=token.symbol.lower())] == [token.address]
    # The chain in every answer, and a chain of the client's own.
    assert client.top_holders(1).chain_id == chain_id
    some = next(iter(client.transfers(page_size=1)))
    assert (some.token.lower(), some.chain_id) == (store.token.lower(), chain_id)
    with HoldersClient(client.target, token=store.token, chain_id=chain_id) as same:
        assert same.top_holders(1).holders == client.top_holders(1).holders
    with HoldersClient(client.target, token=store.token, chain_id=chain_id + 1) as other:
        with pytest.raises(HoldersError) as e:
            other.top_holders(1)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        assert f"chain {chain_id + 1}" in e.value.details


def test_the_seed_script_s_names(store: Store, service: QueryService) -> None:
    with Engineering(service.target, token=store.token) as eng:
        top = eng.top_holders(100)
        assert eng.get_top_100_holders() == eng.decode_records(top.holders)
        fields = [f.name for f in dataclasses.fields(Holder)]
        assert list(eng.get_top_100_holders(3)[0]) == fields
        assert eng.get_holders(5) == eng.decode_records(top.holders[:5])
        everyone = eng.get_holders()
        assert len(everyone) == top.holder_count
        assert isinstance(everyone[0]["balance"], int)


def test_errors_carry_the_code_and_the_server_s_message(
    store: Store, client: HoldersClient, service: QueryService
) -> None:
    cases = [
        (lambda: client.top_holders(20_000), "limit"),
        (lambda: client.top_holders(5, min_balance=-1), "min_balance"),
        (lambda: client.top_holders(5, min_balance="1e18"), "min_balance"),
        (lambda: client.top_holders(5, at_block=10**12), "at_block"),
        (lambda: client.lookup(["0x1234"]), "addresses"),
        (lambda: list(client.export_holders(min_balance=2**256)), "min_balance"),
    ]
    for call, field in cases:
        with pytest.raises(HoldersError) as e:
            call()
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT, e.value
        assert e.value.details.startswith(field), e.value.details
    with pytest.raises(HoldersError) as e:
        HoldersClient(service.target, token="0x" + "11" * 20).top_holders()
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ValueError, match="at_time"):
        client.top_holders(at_time=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="finality"):
        client.top_holders(finality="soon")
    # Nobody listening: UNAVAILABLE, within the deadline.
    with HoldersClient("127.0.0.1:9", timeout=2) as nobody:
        with pytest.raises(HoldersError) as e:
            nobody.tokens()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_finality(store: Store, client: HoldersClient) -> None:
    final = client.top_holders(10_000, finality="finalized")
    assert final.as_of_block <= client.top_holders(1).as_of_block
    assert final.as_of_finalized_block == final.as_of_block
    assert ranked(final.holders) == held(store.chain.balances(store.addresses, final.as_of_block))
    assert client.top_holders(1, finality=Finality.SAFE).as_of_block >= final.as_of_block


def test_tls_with_the_service_s_own_ca(store: Store, tmp_path: pathlib.Path) -> None:
    """A query-service with --tls-cert/--tls-key: the client with the CA's certificate
    (a path or PEM bytes) gets answers; one without it is refused at the handshake."""

    certificates(tmp_path)
    ca = tmp_path / "ca.pem"
    qs = QueryService(store.database_url)
    qs.start("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
             root_certificates=str(ca))
    try:
        for roots in (str(ca), ca.read_bytes()):
            with HoldersClient(qs.target, token=store.token, root_certificates=roots) as c:
                assert c.tokens()[0].address.lower() == store.token.lower()
                assert c.top_holders(3).holder_count > 0
        # The system's roots do not know this CA; plaintext is refused too.
        for kwargs in ({"tls": True}, {}):
            with HoldersClient(qs.target, timeout=5, **kwargs) as c:
                with pytest.raises(HoldersError) as e:
                    c.tokens()
                assert e.value.code == grpc.StatusCode.UNAVAILABLE, e.value
    finally:
        qs.stop()


def test_api_key_rate_limit_and_client_certificate(store: Store, tmp_path: pathlib.Path) -> None:
    """A service with --api-keys-file, --rate-limit and --tls-client-ca: the client's
    ``api_key`` is let in and one without is refused (UNAUTHENTICATED); past the rate
    limit the error carries the service's retry hint; without a client certificate the
    handshake fails."""
    import hashlib
    import time

    certificates(tmp_path)
    key = "py-KEY-3f1c9a"
    (tmp_path / "keys").write_text(f"python {hashlib.sha256(key.encode()).hexdigest()}\n")
    ca, cert, ckey = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    certified = {"root_certificates": str(ca), "client_certificate": str(cert), "client_key": str(ckey)}
    qs = QueryService(store.database_url)
    qs.start("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
             "--tls-client-ca", str(ca), "--api-keys-file", str(tmp_path / "keys"),
             "--rate-limit", "2/s,burst=3", api_key=key, **certified)
    try:
        time.sleep(1.6)  # the probe's calls refilled
        with HoldersClient(qs.target, token=store.token, api_key=key, **certified) as c:
            assert c.top_holders(2).holder_count > 0
            with pytest.raises(HoldersError) as e:
                for _ in range(5):
                    c.top_holders(2)
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
            assert e.value.retry_after is not None and 0 < e.value.retry_after <= 0.5, e.value
            time.sleep(e.value.retry_after)
            assert c.top_holders(1).holders
        with HoldersClient(qs.target, token=store.token, **certified) as c:
            with pytest.raises(HoldersError) as e:
                c.top_holders(2)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED, e.value
        with HoldersClient(qs.target, token=store.token, api_key=key,
                           root_certificates=str(ca), timeout=5) as c:
            with pytest.raises(HoldersError) as e:
                c.top_holders(2)
            assert e.value.code == grpc.StatusCode.UNAVAILABLE, e.value
        with pytest.raises(ValueError):
            HoldersClient(qs.target, client_certificate=str(cert))
    finally:
        qs.stop()


def certificates(folder: pathlib.Path) -> None:
    """A CA (ca.pem), a server certificate for localhost/127.0.0.1 signed by it
    (cert.pem, key.pem) and a client certificate signed by it (client.pem, client.key),
    made with the openssl CLI in ``folder``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=test CA")
    for name, subject, usage in (
        ("cert", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth"),
        ("client", "/CN=client", "extendedKeyUsage=clientAuth"),
    ):
        key = "key.pem" if name == "cert" else "client.key"
        openssl("req", *ec, "-keyout", key, "-out", f"{name}.csr", "-subj", subject)
        (folder / f"{name}.cnf").write_text(f"basicConstraints=critical,CA:FALSE\n{usage}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.cnf")


def test_min_block(store: Store, client: HoldersClient) -> None:
    """``min_block`` at or below the store's block answers at once; above anything the
    store will hold it waits the service's bound, then UNAVAILABLE names the block."""
    top = client.top_holders(3)
    assert client.top_holders(3, min_block=top.as_of_block).as_of_block >= top.as_of_block
    assert list(client.transfers(page_size=2, min_block=top.as_of_block))
    with pytest.raises(HoldersError) as e:
        client.lookup(store.addresses[:2], min_block=top.as_of_block + 10**9)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE, e.value
    assert "holds block" in e.value.details and "min_block" in e.value.details, e.value
