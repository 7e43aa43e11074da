"""cancelnote: accountable order cancellation for off-chain exchanges.

The operator answers every cancel with a signed cancellation note; clients keep notes and
fills as evidence; a court contract on the EVM decides disputes from that evidence.
"""

__version__ = "0.1.0"
