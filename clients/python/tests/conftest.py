"""Real parts for the client's tests: a store on Anvil built and followed by the real
ingestor (``target/debug/store-fixture``), the real query-service binary serving it (a
fixture that can restart it), and the chain itself for ``balanceOf`` at any block.

``HOLDERS_BIN_DIR`` names the folder of the binaries (default: the repository's
``target/debug``; ``scripts/test.sh`` builds them); ``DATABASE_URL`` the PostgreSQL the
store is made on."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request
from typing import Any, Dict, Iterator, List, Optional

import pytest

from holders_client import HoldersClient, HoldersError

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("HOLDERS_BIN_DIR", ROOT / "target" / "debug"))
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


class Chain:
    """Anvil over JSON-RPC: reads at any block; sends as any address (impersonation is
    on, automine off: a transaction lands at the next ``mine``)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def rpc(self, method: str, params: List[Any]) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        request = urllib.request.Request(
            self.url, body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.loads(r.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber", []), 16)

    def call(self, data: str, block: int) -> int:
        return int(self.rpc("eth_call", [{"to": self.token, "data": data}, hex(block)]), 16)

    def balance_of(self, address: str, block: int) -> int:
        return self.call("0x70a08231" + address[2:].lower().rjust(64, "0"), block)

    def total_supply(self, block: int) -> int:
        return self.call("0x18160ddd", block)

    def balances(self, addresses: List[str], block: int) -> Dict[str, int]:
        return {a.lower(): self.balance_of(a, block) for a in addresses}

    def transfer(self, sender: str, to: str, value: int) -> str:
        """Queues ``transfer(to, value)`` from ``sender``; returns the transaction hash."""
        data = "0xa9059cbb" + to[2:].lower().rjust(64, "0") + hex(value)[2:].rjust(64, "0")
        tx = {
            "from": sender,
            "to": self.token,
            "data": data,
            "gas": hex(200_000),
            "maxFeePerGas": hex(100 * 10**9),
            "maxPriorityFeePerGas": hex(10**9),
        }
        return self.rpc("eth_sendTransaction", [tx])

    def mine(self) -> int:
        self.rpc("evm_mine", [])
        return self.head()

    def logs(self, from_block: int, to_block: int) -> List[Dict[str, Any]]:
        return self.rpc(
            "eth_getLogs",
            [{"address": self.token, "fromBlock": hex(from_block), "toBlock": hex(to_block),
              "topics": [TRANSFER_TOPIC]}],
        )


class Store:
    """What store-fixture built: its chain, database and history."""

    def __init__(self, info: Dict[str, Any]) -> None:
        self.info = info
        self.database_url: str = info["database_url"]
        self.token: str = info["token"]
        self.start_block: int = info["start_block"]
        self.end_block: int = info["end_block"]
        self.addresses: List[str] = info["addresses"]
        self.chain = Chain(info["rpc_url"], self.token)


class QueryService:
    """The query-service binary on a free port, restartable on the same port."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen] = None

    def start(self, *extra: str, **client: Any) -> None:
        """Starts it with ``extra`` flags; ``client`` are the probe's HoldersClient
        arguments (TLS, say)."""
        self.process = subprocess.Popen(
            [str(BIN / "query-service"), "--database-url", self.database_url,
             "--listen", self.target, "--metrics-listen", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        with HoldersClient(self.target, timeout=2, **client) as probe:
            while True:
                try:
                    probe.tokens()
                    return
                except HoldersError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture(scope="session")
def store() -> Iterator[Store]:
    fixture = BIN / "store-fixture"
    if not fixture.exists():
        pytest.fail(f"{fixture} is missing: run `cargo build --bins` (scripts/test.sh does)")
    process = subprocess.Popen(
        [str(fixture)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=30)
        pytest.fail(f"store-fixture ended before the store was ready ({process.returncode})")
    yield Store(json.loads(line))
    process.stdin.close()
    process.wait(timeout=60)


@pytest.fixture(scope="session")
def service(store: Store) -> Iterator[QueryService]:
    qs = QueryService(store.database_url)
    qs.start()
    yield qs
    qs.stop()


@pytest.fixture()
def client(store: Store, service: QueryService) -> Iterator[HoldersClient]:
    with HoldersClient(service.target, token=store.token) as c:
        yield c


def wait_indexed(client: HoldersClient, block: int, within: float = 30.0) -> None:
    """Waits until the store's checkpoint reaches ``block``."""
    deadline = time.monotonic() + within
    while next(t for t in client.tokens() if t.address.lower() == client.token.lower()).indexed_block < block:
        assert time.monotonic() < deadline, f"block {block} not indexed within {within} s"
        time.sleep(0.1)
