//! JSON-RPC to a test chain, and the compiled TestToken contract
//! (`rig/contracts/TestToken.json`, built from TestToken.sol by solc 0.8.26).
//!
//! Transactions are queued with automine off and mined together by [`Chain::mine`], so a
//! block can hold several transactions; every receipt is checked, so a transaction that
//! failed or vanished fails the test instead of silently changing the history.

use std::collections::HashMap;

use alloy_primitives::{Address, B256, Bytes, U256, hex};
use alloy_sol_types::{SolCall, SolConstructor, sol};
use anyhow::{Context, bail};
use serde_json::{Value, json};

/// TestToken compiled (abi and bytecode), from `rig/contracts/build.sh`.
pub const TEST_TOKEN_JSON: &str = include_str!("../contracts/TestToken.json");

/// Multicall3 compiled (abi and runtime bytecode), for chains that lack it.
pub const MULTICALL3_JSON: &str = include_str!("../contracts/Multicall3.json");

sol! {
    /// The test token's ABI (rig/contracts/TestToken.sol).
    contract TestToken {
        constructor(string name_, string symbol_);
        function transfer(address to, uint256 value) external returns (bool);
        function approve(address spender, uint256 value) external returns (bool);
        function transferFrom(address from, address to, uint256 value) external returns (bool);
        function mint(address to, uint256 value) external;
        function mintBatch(address[] to, uint256[] values) external;
        function burn(uint256 value) external;
        function spray(address[] to, uint256[] values) external;
        function moveBatch(address[] from, address[] to, uint256[] values) external;
        function emitNftShapedTransfer(address from, address to, uint256 tokenId) external;
        function balanceOf(address who) external view returns (uint256);
        function totalSupply() external view returns (uint256);
    }
}

/// The deployer and minter: Anvil's first account.
pub const DEPLOYER: Address =
    alloy_primitives::address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

/// A JSON-RPC client of a test chain that tracks the nonces of the accounts it sends from.
#[derive(Debug)]
pub struct Chain {
    http: reqwest::Client,
    /// The node's URL.
    pub url: String,
    nonces: HashMap<Address, u64>,
    queued: Vec<B256>,
    /// Timestamp of the last block mined through [`Chain::mine`].
    pub last_time: u64,
}

impl Chain {
    /// Connects, turns automine off and lets any address send (impersonation).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut chain = Self {
            http: reqwest::Client::new(),
            url: url.to_string(),
            nonces: HashMap::new(),
            queued: Vec::new(),
            last_time: 0,
        };
        chain.rpc("evm_setAutomine", json!([false])).await?;
        chain.rpc("anvil_autoImpersonateAccount", json!([true])).await?;
        let latest = chain.rpc("eth_getBlockByNumber", json!(["latest", false])).await?;
        chain.last_time = hex_u64(&latest["timestamp"])?;
        Ok(chain)
    }

    /// One JSON-RPC call; an error answer is an error.
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp: Value = self.http.post(&self.url).json(&body).send().await?.json().await?;
        if let Some(e) = resp.get("error") {
            bail!("{method} failed: {e}");
        }
        Ok(resp["result"].clone())
    }

    /// Many calls in one JSON-RPC batch, answers in call order.
    pub async fn batch(&self, calls: &[(&str, Value)]) -> anyhow::Result<Vec<Value>> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (m, p))| json!({"jsonrpc": "2.0", "id": i, "method": m, "params": p}))
            .collect();
        let resp: Vec<Value> = self.http.post(&self.url).json(&body).send().await?.json().await?;
        let mut out = vec![Value::Null; calls.len()];
        for r in resp {
            let id = r["id"].as_u64().context("batch answer without id")? as usize;
            if let Some(e) = r.get("error") {
                bail!("{} failed: {e}", calls[id].0);
            }
            out[id] = r["result"].clone();
        }
        Ok(out)
    }

    /// Gives each address 1000 ETH for gas.
    pub async fn fund(&self, addresses: &[Address]) -> anyhow::Result<()> {
        let wei = format!("{:#x}", U256::from(10).pow(U256::from(21)));
        for chunk in addresses.chunks(500) {
            let calls: Vec<(&str, Value)> =
                chunk.iter().map(|a| ("anvil_setBalance", json!([a, wei]))).collect();
            self.batch(&calls).await?;
        }
        Ok(())
    }

    /// Queues a transaction from `from`; it lands at the next [`Chain::mine`].
    pub async fn send(
        &mut self,
        from: Address,
        to: Option<Address>,
        data: Vec<u8>,
        gas: u64,
    ) -> anyhow::Result<B256> {
        let nonce = match self.nonces.get(&from) {
            Some(n) => *n,
            None => hex_u64(&self.rpc("eth_getTransactionCount", json!([from, "pending"])).await?)?,
        };
        self.nonces.insert(from, nonce + 1);
        let mut tx = json!({
            "from": from,
            "data": Bytes::from(data),
            "gas": format!("{gas:#x}"),
            "nonce": format!("{nonce:#x}"),
            "maxFeePerGas": "0x174876e800",
            "maxPriorityFeePerGas": "0x3b9aca00",
        });
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        let hash: B256 =
            serde_json::from_value(self.rpc("eth_sendTransaction", json!([tx])).await?)?;
        self.queued.push(hash);
        Ok(hash)
    }

    /// Queues a call of `call` on `token` from `from`.
    pub async fn call_from<C: SolCall>(
        &mut self,
        from: Address,
        token: Address,
        call: C,
    ) -> anyhow::Result<B256> {
        let gas = 200_000 + 40_000 * (call.abi_encoded_size() as u64 / 32);
        self.send(from, Some(token), call.abi_encode(), gas.min(30_000_000)).await
    }

    /// Mines every queued transaction in blocks `seconds_later` after the previous one,
    /// and checks that each succeeded. Returns the last block mined.
    pub async fn mine(&mut self, seconds_later: u64) -> anyhow::Result<u64> {
        let mut time = self.last_time + seconds_later.max(1);
        for _ in 0..50 {
            self.rpc("evm_mine", json!([time])).await?;
            let status = self.rpc("txpool_status", json!([])).await?;
            if hex_u64(&status["pending"])? == 0 && hex_u64(&status["queued"])? == 0 {
                break;
            }
            time += 1;
        }
        self.last_time = time;
        let queued = std::mem::take(&mut self.queued);
        for chunk in queued.chunks(500) {
            let calls: Vec<(&str, Value)> =
                chunk.iter().map(|h| ("eth_getTransactionReceipt", json!([h]))).collect();
            for (hash, receipt) in chunk.iter().zip(self.batch(&calls).await?) {
                if receipt.is_null() {
                    bail!("transaction {hash} was not mined");
                }
                if receipt["status"] != json!("0x1") {
                    bail!("transaction {hash} reverted");
                }
            }
        }
        self.head().await
    }

    /// Takes a snapshot of the chain to return to with [`Chain::revert`].
    pub async fn snapshot(&self) -> anyhow::Result<Value> {
        self.rpc("evm_snapshot", json!([])).await
    }

    /// Returns the chain to a snapshot: the blocks after it are gone, and the next ones
    /// mined form another branch.
    pub async fn revert(&mut self, snapshot: Value) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rpc("evm_revert", json!([snapshot])).await? == json!(true),
            "evm_revert refused"
        );
        self.nonces.clear();
        self.queued.clear();
        let head = self.head().await?;
        self.last_time = self.block_time(head).await?;
        Ok(())
    }

    /// Deploys a TestToken and returns its address.
    pub async fn deploy_token(&mut self, name: &str, symbol: &str) -> anyhow::Result<Address> {
        let mut data = bytecode()?;
        data.extend(
            TestToken::constructorCall { name_: name.into(), symbol_: symbol.into() }.abi_encode(),
        );
        let hash = self.send(DEPLOYER, None, data, 3_000_000).await?;
        self.mine(1).await?;
        let receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).await?;
        Ok(serde_json::from_value(receipt["contractAddress"].clone())?)
    }

    /// The newest block number.
    pub async fn head(&self) -> anyhow::Result<u64> {
        hex_u64(&self.rpc("eth_blockNumber", json!([])).await?)
    }

    /// balanceOf(holder) at `block` for every holder, in one batch per 500.
    pub async fn balances_at(
        &self,
        token: Address,
        holders: &[Address],
        block: u64,
    ) -> anyhow::Result<Vec<U256>> {
        let mut out = Vec::with_capacity(holders.len());
        for chunk in holders.chunks(500) {
            let calls: Vec<(&str, Value)> = chunk
                .iter()
                .map(|h| {
                    let data = Bytes::from(TestToken::balanceOfCall { who: *h }.abi_encode());
                    ("eth_call", json!([{"to": token, "data": data}, format!("{block:#x}")]))
                })
                .collect();
            for v in self.batch(&calls).await? {
                out.push(U256::from_be_slice(&hex::decode(
                    v.as_str().context("eth_call answer")?,
                )?));
            }
        }
        Ok(out)
    }

    /// totalSupply() at `block`.
    pub async fn total_supply_at(&self, token: Address, block: u64) -> anyhow::Result<U256> {
        let data = Bytes::from(TestToken::totalSupplyCall {}.abi_encode());
        let v = self
            .rpc("eth_call", json!([{"to": token, "data": data}, format!("{block:#x}")]))
            .await?;
        Ok(U256::from_be_slice(&hex::decode(v.as_str().context("eth_call answer")?)?))
    }

    /// A block's timestamp.
    pub async fn block_time(&self, block: u64) -> anyhow::Result<u64> {
        let b = self.rpc("eth_getBlockByNumber", json!([format!("{block:#x}"), false])).await?;
        hex_u64(&b["timestamp"])
    }
}

/// The TestToken creation bytecode.
pub fn bytecode() -> anyhow::Result<Vec<u8>> {
    let artifact: Value = serde_json::from_str(TEST_TOKEN_JSON)?;
    Ok(hex::decode(artifact["bytecode"].as_str().context("bytecode")?)?)
}

/// Reads a 0x quantity.
pub fn hex_u64(v: &Value) -> anyhow::Result<u64> {
    let s = v.as_str().with_context(|| format!("not a quantity: {v}"))?;
    Ok(u64::from_str_radix(s.trim_start_matches("0x"), 16)?)
}
