"""Any Ethereum node over standard JSON-RPC (HTTP), with transactions signed here.

Only the standard library speaks HTTP (``urllib.request``) and eth-account signs; there is
no web3. The node may be geth, anvil, hardhat or ``cancelnote chain serve``.

Rules:

* **Reverts are answers.** A JSON-RPC error with revert data, code 3 or a message
  ``execution reverted...`` (geth, anvil, hardhat and ``cancelnote chain serve`` shapes)
  becomes :class:`TransactionReverted` with the reason decoded from the error's ``data``.
  A transaction that reverts is still sent and mined, as on
  :class:`~cancelnote.dispute.inprocess.InProcessChain`; the reason of a mined failure
  comes from re-running it as a call at its block.
* **Everything else is a ChainError**: an HTTP error, an answer that is not JSON-RPC, a
  node-side error (nonce too low, insufficient funds: named with the sender and its
  balance). A node that cannot be reached, or a receipt that does not come in time, is
  its subclass :class:`ChainUnreachable` (worth retrying; the CLI exits 4).
* **The node's own accounts** (:class:`NodeAccount`: ``eth_accounts``, unlocked on anvil,
  hardhat, ganache and ``cancelnote chain serve``) send with ``eth_sendTransaction``, so
  the node signs; a :class:`~cancelnote.crypto.Signer` signs here.
* **Nonces are counted here**, under a lock, so threads of one process can send from one
  account without asking the node between transactions; a failed send forgets the count
  and asks the node again.

The hex helpers at the top are the wire format both ends share: the server in
:mod:`~cancelnote.dispute.rpcserver` parses with them too.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import attrs

from ..crypto import Signer, to_checksum
from .chain import (
    Chain,
    ChainError,
    Log,
    LogFilter,
    Receipt,
    TransactionReverted,
    decode_revert_reason,
)

MAX_JSON_DEPTH = 32  # a JSON-RPC batch of eth_getLogs filters nests 5 deep
REVERTED_CODE = 3  # geth's and anvil's error code for "execution reverted"
REVERTED_MESSAGE = "execution reverted"
GAS_MARGIN = 1.2  # a real node's state may move between the estimate and the block
LATEST = "latest"


class ChainUnreachable(ChainError):
    """Raised when the node cannot be reached or does not answer (or mine) in time."""

    code = "CHAIN_UNREACHABLE"


@attrs.frozen
class NodeAccount:
    """An account the node holds unlocked (``eth_accounts[index]``): the node signs for it.

    Anywhere a :class:`~cancelnote.crypto.Signer` pays for a transaction on a
    :class:`JsonRpcChain`, this may pay instead (``--node-account N``).
    """

    address: bytes
    index: int

    @property
    def checksum_address(self) -> str:
        return to_checksum(self.address)

    def __str__(self) -> str:
        return f"node account {self.index} ({self.checksum_address})"


def to_quantity(value: int) -> str:
    """An integer as JSON-RPC writes it: 0x-hex, no leading zeros."""
    return hex(value)


def to_data(value: bytes) -> str:
    """Bytes as JSON-RPC writes them: 0x and two hex digits a byte."""
    return "0x" + value.hex()


def parse_quantity(value: object) -> int:
    """A JSON-RPC quantity (0x-hex string, or an int as some dev nodes send) as an int.

    Raises:
        ValueError: anything else, or a negative number.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        return int(value[2:], 16)  # ValueError for non-hex digits
    raise ValueError(f"expected a 0x-hex quantity, got {value!r}")


def parse_data(value: object, length: int | None = None) -> bytes:
    """JSON-RPC data (0x-hex) as bytes, of exactly ``length`` bytes if given.

    Raises:
        ValueError: not 0x-hex, an odd number of digits, or the wrong length.
    """
    if not isinstance(value, str) or value[:2] not in ("0x", "0X"):
        raise ValueError(f"expected 0x-hex data, got {value!r}")
    data = bytes.fromhex(value[2:])
    if length is not None and len(data) != length:
        raise ValueError(f"expected {length} bytes, got {len(data)}")
    return data


_ESCAPES = re.compile(rb"\\.", re.DOTALL)  # a backslash and the character it escapes
_STRINGS = re.compile(rb'"[^"]*"')  # once escapes are gone, a string has no quote inside
_BRACKETS_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def parse_json(body: bytes) -> Any:
    """UTF-8 JSON, refusing nesting deeper than :data:`MAX_JSON_DEPTH`.

    Importing py-evm raises the recursion limit to 100,000, so the C decoder would overflow
    the C stack (a segfault: the whole process) on ``[[[[...`` instead of raising
    RecursionError. The check drops strings (UTF-8 never hides an ASCII byte inside a
    multi-byte character), then peels the bracket skeleton one level a pass.

    Raises:
        ValueError: not UTF-8, not JSON, or nested too deeply.
    """
    text = body.decode("utf-8")
    skeleton = _STRINGS.sub(b"", _ESCAPES.sub(b"", body))
    brackets = skeleton.translate(_BRACKETS_AS_PARENS, _NOT_BRACKETS)
    for _ in range(MAX_JSON_DEPTH):  # each pass removes the innermost level, in C
        inner_removed = brackets.replace(b"()", b"")
        if len(inner_removed) == len(brackets):  # done, or stuck on unbalanced brackets
            break
        brackets = inner_removed
    if brackets:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels (or unbalanced)")
    return json.loads(text)


def _field(answer: object, key: str) -> Any:
    if not isinstance(answer, dict) or key not in answer:
        raise ChainError(f"malformed answer: no {key!r} in {answer!r:.200}")
    return answer[key]


def _quantity(value: object, what: str) -> int:
    try:
        return parse_quantity(value)
    except ValueError as exc:
        raise ChainError(f"malformed answer: {what} ({exc})") from None


def _data(value: object, what: str, length: int | None = None) -> bytes:
    try:
        return parse_data(value, length)
    except ValueError as exc:
        raise ChainError(f"malformed answer: {what} ({exc})") from None


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ChainError(f"malformed answer: {what} is not a list: {value!r:.200}")
    return value


def _log_from_wire(entry: object) -> Log:
    return Log(
        address=_data(_field(entry, "address"), "log address", 20),
        topics=tuple(
            _data(topic, "log topic", 32) for topic in _list(_field(entry, "topics"), "topics")
        ),
        data=_data(_field(entry, "data"), "log data"),
        block_number=_quantity(_field(entry, "blockNumber"), "log blockNumber"),
        transaction_hash=_data(_field(entry, "transactionHash"), "log transactionHash", 32),
        log_index=_quantity(_field(entry, "logIndex"), "logIndex"),
        transaction_index=_quantity(_field(entry, "transactionIndex"), "log transactionIndex"),
    )


def _receipt_from_wire(answer: object) -> Receipt:
    created = answer.get("contractAddress") if isinstance(answer, dict) else None
    return Receipt(
        transaction_hash=_data(_field(answer, "transactionHash"), "transactionHash", 32),
        block_number=_quantity(_field(answer, "blockNumber"), "receipt blockNumber"),
        gas_used=_quantity(_field(answer, "gasUsed"), "gasUsed"),
        status=_quantity(_field(answer, "status"), "status"),
        logs=tuple(_log_from_wire(entry) for entry in _list(_field(answer, "logs"), "logs")),
        contract_address=None if created is None else _data(created, "contractAddress", 20),
        transaction_index=_quantity(_field(answer, "transactionIndex"), "transactionIndex"),
    )


def _as_revert(error: dict[str, Any]) -> TransactionReverted | None:
    """The revert a node reported, or ``None`` if the error is something else.

    geth and anvil send code 3, ``execution reverted: <reason>`` and the output in ``data``;
    hardhat nests the output (``data.data``) under code -32603; some nodes send only the
    message.
    """
    data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data")
    try:
        output = parse_data(data) if data is not None else b""
    except ValueError:
        output = b""
    if output:
        return TransactionReverted(decode_revert_reason(output), output=output)
    message = str(error.get("message", ""))
    if error.get("code") == REVERTED_CODE or message.startswith(REVERTED_MESSAGE):
        reason = message.removeprefix(REVERTED_MESSAGE).removeprefix(":").strip()
        return TransactionReverted(reason or decode_revert_reason(b""))
    return None


class JsonRpcChain(Chain):
    """A chain behind a JSON-RPC URL; dev methods need a dev node (anvil, hardhat, ours).

    Args:
        url: the node's HTTP endpoint, e.g. ``http://127.0.0.1:8545``.
        timeout: seconds one HTTP request may take.
        receipt_timeout: seconds to wait for a sent transaction to be mined.
        poll_interval: seconds between receipt polls.

    Raises:
        ChainError: the node cannot be reached (the chain id is asked at once).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._receipt_timeout = receipt_timeout
        self._poll_interval = poll_interval
        self._ids = itertools.count(1)
        self._nonce_lock = threading.Lock()
        self._nonces: dict[bytes, int] = {}
        self.chain_id = _quantity(self._rpc("eth_chainId"), "eth_chainId result")

    # --- transport ------------------------------------------------------------------------

    def _rpc(self, method: str, *params: object) -> Any:
        """One JSON-RPC request; the result, or TransactionReverted / ChainError."""
        request = urllib.request.Request(
            self.url,
            data=json.dumps(
                {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:  # some nodes put the JSON error in a 4xx/5xx
            with exc:
                body = exc.read()
            if not body:
                raise ChainError(
                    f"{method}: HTTP {exc.code} {exc.reason} from {self.url}"
                ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ChainUnreachable(f"cannot reach the node at {self.url} ({reason})") from None
        try:
            answer = parse_json(body)
        except ValueError:
            raise ChainError(f"{method}: the answer is not JSON: {body[:200]!r}") from None
        if not isinstance(answer, dict):
            raise ChainError(f"{method}: the answer is not a JSON-RPC object: {answer!r:.200}")
        error = answer.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise ChainError(f"{method}: malformed error {error!r:.200}")
            reverted = _as_revert(error)
            if reverted is not None:
                raise reverted
            raise ChainError(f"{method}: {error.get('message')} (code {error.get('code')})")
        return _field(answer, "result")

    # --- Chain ----------------------------------------------------------------------------

    def call(
        self,
        to: bytes | None,
        data: bytes,
        *,
        sender: bytes | None = None,
        value: int = 0,
        block_number: int | None = None,
    ) -> bytes:
        """``eth_call``; ``block_number`` runs it on that block instead of the latest."""
        block = LATEST if block_number is None else to_quantity(block_number)
        result = self._rpc("eth_call", self._call_object(sender, to, data, value), block)
        return _data(result, "eth_call result")

    def estimate_gas(self, sender: bytes, to: bytes | None, data: bytes, *, value: int = 0) -> int:
        result = self._rpc("eth_estimateGas", self._call_object(sender, to, data, value))
        return _quantity(result, "eth_estimateGas result")

    def logs(self, wanted: LogFilter) -> list[Log]:
        """``eth_getLogs`` with the filter (alternatives as JSON arrays, sorted: the same
        filter is the same request)."""
        query: dict[str, Any] = {
            "fromBlock": to_quantity(wanted.from_block),
            "toBlock": LATEST if wanted.to_block is None else to_quantity(wanted.to_block),
            "topics": [
                None if allowed is None else [to_data(topic) for topic in sorted(allowed)]
                for allowed in wanted.topics
            ],
        }
        if wanted.addresses is not None:
            query["address"] = [to_data(address) for address in sorted(wanted.addresses)]
        answer = self._rpc("eth_getLogs", query)
        return [_log_from_wire(entry) for entry in _list(answer, "eth_getLogs result")]

    def block_number(self) -> int:
        return _quantity(self._rpc("eth_blockNumber"), "eth_blockNumber result")

    def timestamp(self) -> int:
        return _quantity(_field(self._latest_block(), "timestamp"), "block timestamp")

    def balance(self, address: bytes) -> int:
        result = self._rpc("eth_getBalance", to_data(address), LATEST)
        return _quantity(result, "eth_getBalance result")

    def transaction_input(self, transaction_hash: bytes) -> bytes | None:
        result = self._rpc("eth_getTransactionByHash", to_data(transaction_hash))
        if result is None or result.get("blockNumber") is None:
            return None  # unknown, or not mined yet
        return _data(_field(result, "input"), "transaction input")

    def set_next_block_timestamp(self, timestamp: int) -> None:
        self._rpc("evm_setNextBlockTimestamp", timestamp)

    def increase_time(self, seconds: int) -> None:
        """``evm_increaseTime``: the next block comes ``seconds`` after the latest one.

        That is exact on ``cancelnote chain serve``; anvil and hardhat add ``seconds`` to
        their wall-clock offset instead, so the jump is at least ``seconds`` there.
        """
        self._rpc("evm_increaseTime", seconds)

    def mine(self) -> None:
        self._rpc("evm_mine")

    # --- beyond the ABC -------------------------------------------------------------------

    def nonce(self, address: bytes) -> int:
        """The node's next nonce for ``address``, pending transactions included."""
        result = self._rpc("eth_getTransactionCount", to_data(address), "pending")
        return _quantity(result, "eth_getTransactionCount result")

    def code(self, address: bytes) -> bytes:
        """The runtime code at ``address``."""
        return _data(self._rpc("eth_getCode", to_data(address), LATEST), "eth_getCode result")

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _call_object(
        sender: bytes | None, to: bytes | None, data: bytes, value: int
    ) -> dict[str, str]:
        call = {"data": to_data(data), "value": to_quantity(value)}
        if sender is not None:
            call["from"] = to_data(sender)
        if to is not None:
            call["to"] = to_data(to)
        return call

    def _latest_block(self) -> dict[str, Any]:
        block = self._rpc("eth_getBlockByNumber", LATEST, False)
        if not isinstance(block, dict):
            raise ChainError(f"eth_getBlockByNumber: expected a block, got {block!r:.200}")
        return block

    def _send(
        self, sender: Signer | NodeAccount, to: bytes | None, data: bytes, value: int
    ) -> Receipt:
        """Estimate, price, sign (here, or the node for a :class:`NodeAccount`), send, wait.

        A transaction whose estimate reverts is still sent, with the block gas limit, so it
        is mined and charged as on the in-process chain (the sender must afford that limit).
        A refusal by the node names the sender and what it holds.
        """
        try:
            latest = self._latest_block()
            gas_limit = _quantity(_field(latest, "gasLimit"), "block gasLimit")
            try:
                gas = self.estimate_gas(sender.address, to, data, value=value)
                gas = min(gas_limit, int(gas * GAS_MARGIN))
            except TransactionReverted:  # mined and charged like any failure, as a node would
                gas = gas_limit
            transaction: dict[str, Any] = {
                "chainId": self.chain_id,
                "gas": gas,
                "value": value,
                "data": data,
                **self._fees(latest),
            }
            if to is not None:
                transaction["to"] = to
            if isinstance(sender, NodeAccount):
                transaction_hash = self._send_from_node(sender, transaction)
            else:
                transaction_hash = self._send_signed(sender, transaction)
        except ChainUnreachable:
            raise
        except ChainError as exc:
            raise ChainError(f"{self._describe(sender)} cannot send: {exc}") from None
        receipt = self._wait_for_receipt(transaction_hash)
        if receipt.status == 0:
            failure = self._replay(sender.address, to, data, value, receipt.block_number)
            raise TransactionReverted(failure.reason, receipt, failure.output)
        return receipt

    def _send_signed(self, sender: Signer, transaction: dict[str, Any]) -> bytes:
        """Sign with the next nonce (counted here) and ``eth_sendRawTransaction``."""
        from eth_account import Account  # 0.6 s to import: only once a key signs here

        with self._nonce_lock:
            nonce = self._nonces.get(sender.address)
            if nonce is None:
                nonce = self.nonce(sender.address)
            signed = Account.sign_transaction({**transaction, "nonce": nonce}, sender.secret)
            try:
                result = self._rpc("eth_sendRawTransaction", to_data(signed.raw_transaction))
            except (ChainError, TransactionReverted):  # hardhat refuses reverts at sending
                self._nonces.pop(sender.address, None)  # ask the node again next time
                raise
            self._nonces[sender.address] = nonce + 1
        if not isinstance(result, str) or result.lower() != to_data(bytes(signed.hash)):
            raise ChainError(f"eth_sendRawTransaction: the node answered {result!r:.100}")
        return bytes(signed.hash)

    def _send_from_node(self, sender: NodeAccount, transaction: dict[str, Any]) -> bytes:
        """``eth_sendTransaction``: the node signs with its unlocked key (and counts nonces)."""
        request = {
            "from": to_data(sender.address),
            **{
                key: to_data(value) if isinstance(value, bytes) else to_quantity(value)
                for key, value in transaction.items()
            },
        }
        result = self._rpc("eth_sendTransaction", request)
        return _data(result, "eth_sendTransaction result", 32)

    def node_account(self, index: int) -> NodeAccount:
        """The node's ``eth_accounts[index]``, which it signs for.

        Raises:
            ChainError: the node holds fewer accounts (most public nodes hold none).
        """
        accounts = _list(self._rpc("eth_accounts"), "eth_accounts result")
        if not 0 <= index < len(accounts):
            raise ChainError(
                f"the node at {self.url} holds {len(accounts)} unlocked accounts:"
                f" there is no node account {index}"
            )
        return NodeAccount(_data(accounts[index], "eth_accounts entry", 20), index)

    def _describe(self, sender: Signer | NodeAccount) -> str:
        """The sender and what it holds, for an error message."""
        name = str(sender) if isinstance(sender, NodeAccount) else sender.checksum_address
        try:
            return f"{name}, holding {self.balance(sender.address) / 10**18:,.6f} ETH,"
        except ChainError:
            return name

    def _fees(self, latest: dict[str, Any]) -> dict[str, Any]:
        """EIP-1559 fees when the chain has a base fee (2x base + tip), else a gas price."""
        gas_price = _quantity(self._rpc("eth_gasPrice"), "eth_gasPrice result")
        if latest.get("baseFeePerGas") is None:
            return {"gasPrice": gas_price}
        base_fee = _quantity(latest["baseFeePerGas"], "block baseFeePerGas")
        tip = max(gas_price - base_fee, 0)
        return {"type": 2, "maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}

    def _wait_for_receipt(self, transaction_hash: bytes) -> Receipt:
        deadline = time.monotonic() + self._receipt_timeout
        while True:
            answer = self._rpc("eth_getTransactionReceipt", to_data(transaction_hash))
            if answer is not None:
                return _receipt_from_wire(answer)
            if time.monotonic() > deadline:
                raise ChainUnreachable(
                    f"transaction {to_data(transaction_hash)} not mined "
                    f"after {self._receipt_timeout} s"
                )
            time.sleep(self._poll_interval)

    def _replay(
        self, sender: bytes, to: bytes | None, data: bytes, value: int, block_number: int
    ) -> TransactionReverted:
        """Why a mined transaction failed: re-run it as a call on its block."""
        try:
            self.call(to, data, sender=sender, value=value, block_number=block_number)
        except TransactionReverted as reverted:
            return reverted
        return TransactionReverted(f"reverted; the reason does not replay at block {block_number}")
