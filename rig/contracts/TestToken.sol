// SPDX-License-Identifier: MIT
pragma solidity 0.8.26;

/// A plain ERC-20 for the tests and the demo, plus batch helpers that emit many
/// Transfer logs in one transaction, and one helper that emits an ERC-721-shaped
/// Transfer (4 topics) that an ERC-20 indexer must skip.
contract TestToken {
    string public name;
    string public symbol;
    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    address public immutable owner;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(string memory name_, string memory symbol_) {
        name = name_;
        symbol = symbol_;
        owner = msg.sender;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= value, "allowance");
            allowance[from][msg.sender] = allowed - value;
        }
        _transfer(from, to, value);
        return true;
    }

    function mint(address to, uint256 value) external {
        require(msg.sender == owner, "owner");
        _mint(to, value);
    }

    /// Mints to many holders in one transaction.
    function mintBatch(address[] calldata to, uint256[] calldata values) external {
        require(msg.sender == owner, "owner");
        require(to.length == values.length, "length");
        for (uint256 i = 0; i < to.length; i++) {
            _mint(to[i], values[i]);
        }
    }

    function burn(uint256 value) external {
        require(balanceOf[msg.sender] >= value, "balance");
        balanceOf[msg.sender] -= value;
        totalSupply -= value;
        emit Transfer(msg.sender, address(0), value);
    }

    /// Sends from the caller to many recipients in one transaction.
    function spray(address[] calldata to, uint256[] calldata values) external {
        require(to.length == values.length, "length");
        for (uint256 i = 0; i < to.length; i++) {
            _transfer(msg.sender, to[i], values[i]);
        }
    }

    /// Moves tokens between any holders in one transaction (owner only): lets the
    /// benchmark make a realistic many-sender history with a few large transactions.
    function moveBatch(address[] calldata from, address[] calldata to, uint256[] calldata values)
        external
    {
        require(msg.sender == owner, "owner");
        require(from.length == to.length && to.length == values.length, "length");
        for (uint256 i = 0; i < to.length; i++) {
            _transfer(from[i], to[i], values[i]);
        }
    }

    /// Emits Transfer(address,address,uint256) with all three arguments indexed and no
    /// data, the ERC-721 shape. Balances do not change.
    function emitNftShapedTransfer(address from, address to, uint256 tokenId) external {
        bytes32 topic = keccak256("Transfer(address,address,uint256)");
        assembly {
            log4(0, 0, topic, from, to, tokenId)
        }
    }

    function _transfer(address from, address to, uint256 value) private {
        require(to != address(0), "to zero");
        require(balanceOf[from] >= value, "balance");
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    function _mint(address to, uint256 value) private {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }
}
