#!/usr/bin/env bash
# Recompiles TestToken.sol into TestToken.json (abi + bytecode) and Multicall3.sol into
# Multicall3.json (abi + runtime bytecode) with solc-js from npm.
# Only needed after editing the contract: the tests read the committed JSON.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools="$here/../../.tools/solc"
[ -x "$tools/node_modules/.bin/solcjs" ] || npm install --prefix "$tools" --no-audit --no-fund solc@0.8.26 >/dev/null
node - "$here" "$tools" <<'JS'
const [dir, tools] = process.argv.slice(2);
const fs = require('fs');
const solc = require(tools + '/node_modules/solc');
const input = {
  language: 'Solidity',
  sources: {
    'TestToken.sol': { content: fs.readFileSync(dir + '/TestToken.sol', 'utf8') },
    'Multicall3.sol': { content: fs.readFileSync(dir + '/Multicall3.sol', 'utf8') },
  },
  settings: { optimizer: { enabled: true, runs: 200 }, outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } } },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
for (const e of out.errors || []) { if (e.severity === 'error') { console.error(e.formattedMessage); process.exit(1); } }
const c = out.contracts['TestToken.sol'].TestToken;
fs.writeFileSync(dir + '/TestToken.json', JSON.stringify({ contractName: 'TestToken', compiler: 'solc ' + solc.version(), abi: c.abi, bytecode: '0x' + c.evm.bytecode.object }, null, 1) + '\n');
const m = out.contracts['Multicall3.sol'].Multicall3;
fs.writeFileSync(dir + '/Multicall3.json', JSON.stringify({ contractName: 'Multicall3', compiler: 'solc ' + solc.version(), abi: m.abi, deployedBytecode: '0x' + m.evm.deployedBytecode.object }, null, 1) + '\n');
console.log('wrote TestToken.json and Multicall3.json with', solc.version());
JS
