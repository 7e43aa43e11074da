"""Serve a chain of this process (py-evm or revm) over standard Ethereum JSON-RPC on HTTP.

``cancelnote chain serve`` runs this so separate processes (operator, clients, watchers)
share one chain, through :class:`~cancelnote.dispute.jsonrpc.JsonRpcChain` or any other
Ethereum client. The chain is a :class:`~cancelnote.dispute.local.LocalChain`: py-evm by
default, revm with ``--backend revm`` (whose blocks have no Merkle roots, and which reads
only its newest state).

The :class:`Dispatcher` turns request bytes into response bytes and does no I/O; the HTTP
server around it only moves bytes (h11's split).

Error handling: every input gets an answer, and none stops the server.

* not JSON → -32700; not a JSON-RPC request (or an empty batch) → -32600;
* unknown method → -32601; wrong number or form of params → -32602;
* a revert → 3, ``execution reverted: <reason>``, ``data`` = the revert output (as geth);
* a chain refusal (bad nonce, unknown block, time going back) → -32000 with the reason;
* anything else is a bug: logged with its traceback, answered -32603;
* a client hanging up or stalling mid-request (30 s) costs only its own thread.

Supported: ``web3_clientVersion``, ``net_version``, ``eth_chainId``, ``eth_accounts``,
``eth_blockNumber``, ``eth_getBlockByNumber``, ``eth_getBalance``, ``eth_getCode``,
``eth_getTransactionCount``, ``eth_gasPrice``, ``eth_maxPriorityFeePerGas``, ``eth_call``,
``eth_estimateGas``, ``eth_sendRawTransaction``, ``eth_sendTransaction`` (from a dev
account: the server signs, as anvil and hardhat do), ``eth_getTransactionReceipt``,
``eth_getTransactionByHash``, ``eth_getLogs``, and the dev methods
``evm_setNextBlockTimestamp``, ``evm_increaseTime``, ``evm_mine``.
"""

from __future__ import annotations

import inspect
import json
import logging
import signal
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import __version__
from ..exits import USAGE
from .chain import ChainError, Log, LogFilter, TransactionReverted
from .jsonrpc import (
    REVERTED_CODE,
    REVERTED_MESSAGE,
    parse_data,
    parse_json,
    parse_quantity,
    to_data,
    to_quantity,
)
from .local import DEV_BALANCE, LocalChain, MinedTransaction, logs_bloom, make_chain

LOGGER = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # geth's code for a refused transaction or an unknown block
MAX_BODY_BYTES = 8 * 1024 * 1024  # a 24 KiB contract in hex is 50 KiB; this is plenty
SOCKET_TIMEOUT_S = 30  # a client that stops sending mid-request loses its thread after this
LATEST_TAGS = ("latest", "pending", "safe", "finalized")  # all the head on an auto-mined chain


class RpcError(Exception):
    """Raised inside the dispatcher to answer with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _parsed(parse: Callable[[Any], Any], value: object, what: str) -> Any:
    """``parse(value)``, with a malformed value answered as invalid params."""
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise RpcError(INVALID_PARAMS, f"invalid {what}: {exc}") from None


def _address(value: object, what: str = "address") -> bytes:
    return _parsed(lambda v: parse_data(v, 20), value, what)


def _hash32(value: object, what: str) -> bytes:
    return _parsed(lambda v: parse_data(v, 32), value, what)


def _error(request_id: object, code: int, message: str, data: str | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def _log_json(log: Log, block_hash: bytes) -> dict[str, Any]:
    return {
        "address": to_data(log.address),
        "topics": [to_data(topic) for topic in log.topics],
        "data": to_data(log.data),
        "blockNumber": to_quantity(log.block_number),
        "blockHash": to_data(block_hash),
        "transactionHash": to_data(log.transaction_hash),
        "transactionIndex": to_quantity(log.transaction_index),
        "logIndex": to_quantity(log.log_index),
        "removed": False,
    }


def _transaction_json(mined: MinedTransaction) -> dict[str, Any]:
    transaction = mined.transaction
    return {
        "hash": to_data(transaction.hash),
        "blockHash": to_data(mined.block_hash),
        "blockNumber": to_quantity(mined.receipt.block_number),
        "transactionIndex": to_quantity(mined.receipt.transaction_index),
        "from": to_data(transaction.sender),
        "to": None if transaction.to is None else to_data(transaction.to),
        "nonce": to_quantity(transaction.nonce),
        "value": to_quantity(transaction.value),
        "gas": to_quantity(transaction.gas),
        "gasPrice": to_quantity(mined.effective_gas_price),
        "input": to_data(transaction.data),
        "type": to_quantity(transaction.type_id),
    }


def _receipt_json(mined: MinedTransaction, cumulative_gas: int) -> dict[str, Any]:
    receipt = mined.receipt
    return {
        "transactionHash": to_data(receipt.transaction_hash),
        "transactionIndex": to_quantity(receipt.transaction_index),
        "blockHash": to_data(mined.block_hash),
        "blockNumber": to_quantity(receipt.block_number),
        "from": to_data(mined.transaction.sender),
        "to": None if mined.transaction.to is None else to_data(mined.transaction.to),
        "cumulativeGasUsed": to_quantity(cumulative_gas),
        "gasUsed": to_quantity(receipt.gas_used),
        "effectiveGasPrice": to_quantity(mined.effective_gas_price),
        "contractAddress": (
            None if receipt.contract_address is None else to_data(receipt.contract_address)
        ),
        "logs": [_log_json(log, mined.block_hash) for log in receipt.logs],
        "logsBloom": _bloom(receipt.logs),
        "status": to_quantity(receipt.status),
        "type": to_quantity(mined.transaction.type_id),
    }


def _bloom(logs: tuple[Log, ...] | list[Log]) -> str:
    return to_data(logs_bloom(logs).to_bytes(256, "big"))


class Dispatcher:
    """JSON-RPC over a :class:`LocalChain`: request bytes in, response bytes out."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain
        self._methods: dict[str, Callable[..., Any]] = {
            "web3_clientVersion": self._client_version,
            "net_version": lambda: str(chain.chain_id),
            "eth_chainId": lambda: to_quantity(chain.chain_id),
            "eth_accounts": lambda: [to_data(signer.address) for signer in chain.dev_accounts],
            "eth_blockNumber": lambda: to_quantity(chain.block_number()),
            "eth_getBlockByNumber": self._get_block_by_number,
            "eth_getBalance": self._get_balance,
            "eth_getCode": self._get_code,
            "eth_getTransactionCount": self._get_transaction_count,
            "eth_gasPrice": lambda: to_quantity(chain.base_fee()),
            "eth_maxPriorityFeePerGas": lambda: "0x0",
            "eth_call": self._call,
            "eth_estimateGas": self._estimate_gas,
            "eth_sendRawTransaction": self._send_raw_transaction,
            "eth_sendTransaction": self._send_transaction,
            "eth_getTransactionReceipt": self._get_transaction_receipt,
            "eth_getTransactionByHash": self._get_transaction_by_hash,
            "eth_getLogs": self._get_logs,
            "evm_setNextBlockTimestamp": self._set_next_block_timestamp,
            "evm_increaseTime": self._increase_time,
            "evm_mine": self._mine,
        }
        self._signatures = {
            name: inspect.signature(method) for name, method in self._methods.items()
        }

    def handle(self, body: bytes) -> bytes | None:
        """The response to one HTTP body (a request or a batch); ``None`` for notifications."""
        try:
            request = parse_json(body)
        except ValueError:  # not JSON, not UTF-8, or absurdly nested
            return json.dumps(_error(None, PARSE_ERROR, "parse error: not JSON")).encode()
        if isinstance(request, list):
            if not request:
                response: object = _error(None, INVALID_REQUEST, "invalid request: empty batch")
            else:
                response = [answer for answer in map(self._answer, request) if answer is not None]
                if not response:
                    return None
        else:
            response = self._answer(request)
            if response is None:
                return None
        return json.dumps(response).encode()

    def _answer(self, request: object) -> dict | None:
        """The response object to one request, ``None`` for a notification (no ``id``)."""
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "invalid request: not an object")
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
            return _error(None, INVALID_REQUEST, "invalid request: id must be a string or number")
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(
                request_id,
                INVALID_REQUEST,
                'invalid request: need "jsonrpc": "2.0" and a method name',
            )
        try:
            result = self._run(method, request.get("params", []))
        except RpcError as exc:
            response = _error(request_id, exc.code, exc.message, exc.data)
        else:
            response = {"jsonrpc": "2.0", "id": request_id, "result": result}
        return response if "id" in request else None

    def _run(self, method: str, params: object) -> Any:
        function = self._methods.get(method)
        if function is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        try:
            if isinstance(params, list):
                bound = self._signatures[method].bind(*params)
            elif isinstance(params, dict):
                bound = self._signatures[method].bind(**params)
            else:
                raise TypeError("params must be an array or an object")
        except TypeError as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {exc}") from None
        try:
            return function(*bound.args, **bound.kwargs)
        except RpcError:
            raise
        except TransactionReverted as exc:
            raise RpcError(
                REVERTED_CODE, f"{REVERTED_MESSAGE}: {exc.reason}", to_data(exc.output)
            ) from None
        except ChainError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from None
        except Exception:
            LOGGER.exception("bug while answering %s", method)
            raise RpcError(INTERNAL_ERROR, "internal error") from None

    # --- parameters -------------------------------------------------------------------------

    def _block(self, tag: object) -> int | None:
        """A block parameter: ``None`` for the head, else a number (EIP-1898 objects too)."""
        if isinstance(tag, dict) and set(tag) == {"blockNumber"}:
            tag = tag["blockNumber"]
        if tag in LATEST_TAGS:
            return None
        if tag == "earliest":
            return 0
        return _parsed(parse_quantity, tag, "block number or tag")

    def _call_request(self, call: object) -> tuple[bytes, bytes | None, bytes, int]:
        """``(sender, to, data, value)`` from an ``eth_call``-style object; gas is ignored."""
        if not isinstance(call, dict):
            raise RpcError(INVALID_PARAMS, "invalid params: the call must be an object")
        sender = _address(call["from"], "from") if call.get("from") is not None else bytes(20)
        to = _address(call["to"], "to") if call.get("to") is not None else None
        data = _parsed(parse_data, call.get("input", call.get("data", "0x")) or "0x", "data")
        value = _parsed(parse_quantity, call.get("value", "0x0") or "0x0", "value")
        return sender, to, data, value

    # --- methods ---------------------------------------------------------------------------

    def _client_version(self) -> str:
        return f"cancelnote/{__version__}/{self.chain.engine}"

    def _get_block_by_number(self, tag: object, full: object = False) -> dict | None:
        number = self._block(tag)
        if number is not None and number > self.chain.block_number():
            return None
        block = self.chain.block(number)
        transactions = [
            _transaction_json(self._recorded(tx_hash)) if full else to_data(tx_hash)
            for tx_hash in block.transactions
        ]
        return {
            "number": to_quantity(block.number),
            "hash": to_data(block.hash),
            "parentHash": to_data(block.parent_hash),
            "timestamp": to_quantity(block.timestamp),
            "gasLimit": to_quantity(block.gas_limit),
            "gasUsed": to_quantity(block.gas_used),
            "baseFeePerGas": to_quantity(block.base_fee_per_gas),
            "miner": to_data(block.miner),
            "stateRoot": to_data(block.state_root),
            "transactionsRoot": to_data(block.transactions_root),
            "receiptsRoot": to_data(block.receipts_root),
            "logsBloom": _bloom(self.chain.logs(LogFilter.of(None, block.number, block.number))),
            "difficulty": "0x0",
            "extraData": "0x",
            "uncles": [],
            "transactions": transactions,
        }

    def _get_balance(self, address: object, tag: object = "latest") -> str:
        return to_quantity(self.chain.balance(_address(address), block_number=self._block(tag)))

    def _get_code(self, address: object, tag: object = "latest") -> str:
        return to_data(self.chain.code(_address(address), block_number=self._block(tag)))

    def _get_transaction_count(self, address: object, tag: object = "latest") -> str:
        return to_quantity(self.chain.nonce(_address(address), block_number=self._block(tag)))

    def _call(self, call: object, tag: object = "latest") -> str:
        sender, to, data, value = self._call_request(call)
        output = self.chain.call(
            to, data, sender=sender, value=value, block_number=self._block(tag)
        )
        return to_data(output)

    def _estimate_gas(self, call: object, tag: object = "pending") -> str:
        if self._block(tag) is not None:
            raise RpcError(INVALID_PARAMS, "invalid params: gas is estimated on the next block")
        sender, to, data, value = self._call_request(call)
        return to_quantity(self.chain.estimate_gas(sender, to, data, value=value))

    def _send_raw_transaction(self, raw: object) -> str:
        return to_data(self.chain.send_raw_transaction(_parsed(parse_data, raw, "transaction")))

    def _send_transaction(self, transaction: object) -> str:
        """Sign with the dev account named ``from`` and include it; the node picks the nonce,
        the gas and the fees (those given are ignored). A mined failure answers its hash
        (its receipt says status 0), as geth does."""
        if not isinstance(transaction, dict) or transaction.get("from") is None:
            raise RpcError(INVALID_PARAMS, "invalid params: the transaction needs a from")
        sender, to, data, value = self._call_request(transaction)
        signer = next((s for s in self.chain.dev_accounts if s.address == sender), None)
        if signer is None:
            raise RpcError(SERVER_ERROR, f"unknown account {to_data(sender)}")
        try:
            if to is None:
                receipt = self.chain.deploy(signer, data, value=value)
            else:
                receipt = self.chain.transact(signer, to, data, value=value)
        except TransactionReverted as exc:
            if exc.receipt is None:
                raise
            receipt = exc.receipt
        return to_data(receipt.transaction_hash)

    def _mined(self, tx_hash: object) -> MinedTransaction | None:
        return self.chain.transaction(_hash32(tx_hash, "transaction hash"))

    def _get_transaction_receipt(self, tx_hash: object) -> dict | None:
        mined = self._mined(tx_hash)
        if mined is None:
            return None
        block = self.chain.block(mined.receipt.block_number)
        earlier = block.transactions[: mined.receipt.transaction_index + 1]
        cumulative = sum(self._recorded(tx).receipt.gas_used for tx in earlier)
        return _receipt_json(mined, cumulative)

    def _get_transaction_by_hash(self, tx_hash: object) -> dict | None:
        mined = self._mined(tx_hash)
        return None if mined is None else _transaction_json(mined)

    def _get_logs(self, query: object) -> list[dict[str, Any]]:
        if not isinstance(query, dict):
            raise RpcError(INVALID_PARAMS, "invalid params: the filter must be an object")
        if "blockHash" in query:
            raise RpcError(INVALID_PARAMS, "invalid params: blockHash filters are not supported")
        head = self.chain.block_number()
        from_block = self._block(query.get("fromBlock", "latest"))
        to_block = self._block(query.get("toBlock", "latest"))
        addresses = query.get("address")
        if isinstance(addresses, list):
            addresses = [_address(address) for address in addresses]
        elif addresses is not None:
            addresses = _address(addresses)
        start = head if from_block is None else from_block
        end = head if to_block is None else to_block
        if end < start:
            return []  # geth answers an empty list for a range that ends before it starts
        logs = self.chain.get_logs(addresses, start, end, self._topics(query.get("topics")))
        return [_log_json(log, self._recorded(log.transaction_hash).block_hash) for log in logs]

    def _topics(self, topics: object) -> list[bytes | list[bytes] | None]:
        """Each position: ``None`` (any topic), a topic, or a list of alternatives (OR)."""
        if topics is None:
            return []
        if not isinstance(topics, list):
            raise RpcError(INVALID_PARAMS, "invalid params: topics must be an array")
        return [
            None
            if entry is None
            else [_hash32(value, "topic") for value in entry]
            if isinstance(entry, list)
            else _hash32(entry, "topic")
            for entry in topics
        ]

    def _recorded(self, tx_hash: bytes) -> MinedTransaction:
        """A transaction the chain itself listed (in a block or a log): always recorded."""
        mined = self.chain.transaction(tx_hash)
        assert mined is not None, "every transaction in a block or a log was recorded"
        return mined

    def _set_next_block_timestamp(self, timestamp: object) -> None:
        self.chain.set_next_block_timestamp(_parsed(parse_quantity, timestamp, "timestamp"))

    def _increase_time(self, seconds: object) -> None:
        self.chain.increase_time(_parsed(parse_quantity, seconds, "seconds"))

    def _mine(self, timestamp: object = None) -> str:
        if timestamp is not None:
            self._set_next_block_timestamp(timestamp)
        self.chain.mine()
        return "0x0"


class _Handler(BaseHTTPRequestHandler):
    """POST a JSON-RPC body, get the answer; anything else is refused with an HTTP status."""

    server: RpcServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def do_POST(self) -> None:
        declared = self.headers.get("Content-Length")
        if declared is None:
            self._reply(411, b"")
            return
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            self._reply(400, b"")
            return
        if length > MAX_BODY_BYTES:
            self._reply(413, b"")
            return
        answer = self.server.dispatcher.handle(self.rfile.read(length))
        self._reply(200, answer if answer is not None else b"")

    def do_GET(self) -> None:
        self._reply(405, b"")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status != 200:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        LOGGER.debug("%s " + format, self.address_string(), *args)


class RpcServer(ThreadingHTTPServer):
    """An HTTP server (a thread per connection) answering JSON-RPC for one chain.

    Port 0 binds a free port; :attr:`url` says which.
    """

    daemon_threads = True

    def __init__(self, chain: LocalChain, host: str = "127.0.0.1", port: int = 8545) -> None:
        super().__init__((host, port), _Handler)
        self.dispatcher = Dispatcher(chain)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """A client that hangs up is routine (logged at debug); anything else is a bug."""
        if isinstance(sys.exception(), ConnectionError | TimeoutError):
            LOGGER.debug("client %s went away", client_address, exc_info=True)
        else:
            LOGGER.exception("bug while serving %s", client_address)

    @property
    def url(self) -> str:
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    host: str,
    port: int,
    *,
    chain_id: int,
    accounts: int,
    backend: str = "py-evm",
    hardfork: str = "prague",
) -> int:
    """Run a fresh dev chain on ``host:port`` until SIGINT or SIGTERM (``chain serve``).

    ``backend`` is one of :data:`~cancelnote.dispute.local.BACKENDS` (py-evm by default);
    ``hardfork`` one of py-evm's (:data:`~cancelnote.dispute.inprocess.HARDFORKS`).

    Prints the dev accounts and their keys first, then ``Listening on <url>`` as the
    last line of the banner (scripts wait for it; with port 0 it names the bound port).

    Returns:
        the exit status (:mod:`cancelnote.exits`): 0 after a signal, 2 if the chain cannot
        be made or the address cannot be bound.
    """
    options: dict[str, Any] = {"chain_id": chain_id, "accounts": accounts}
    if hardfork != "prague":
        if backend != "py-evm":
            print(f"cannot start the chain: --hardfork {hardfork} needs py-evm", file=sys.stderr)
            return USAGE
        options["hardfork"] = hardfork
    try:
        chain = make_chain(backend, **options)
    except ChainError as exc:  # revm without its package
        print(f"cannot start the chain: {exc}", file=sys.stderr)
        return USAGE
    try:
        server = RpcServer(chain, host, port)
    except OSError as exc:  # port taken, host not ours
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return USAGE
    lines = [
        f"cancelnote dev chain: {chain.engine}, chain id {chain_id}",
        "",
        "Available accounts",
        "==================",
        *(
            f"({i}) {signer.checksum_address} ({DEV_BALANCE // 10**18} ETH)"
            for i, signer in enumerate(chain.dev_accounts)
        ),
        "",
        "Private keys",
        "==================",
        *(f"({i}) 0x{signer.secret.hex()}" for i, signer in enumerate(chain.dev_accounts)),
        "",
        f"Listening on {server.url}",
    ]
    print("\n".join(lines), flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        server.server_close()
    return 0
