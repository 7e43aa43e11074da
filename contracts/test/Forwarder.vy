# pragma version ~=0.4.3
"""
@title Forwarder
@custom:contract-name Forwarder
@license MIT
@notice Test only: a contract that calls the court with calldata it is given, as a
        smart-contract wallet that owns orders (`requestCancel` from a contract) or a
        relayer contract (`requestCancelSigned`) would. The transaction's input is then
        this contract's call, not the court's: an operator that read the request from
        the transaction's calldata could not answer it.
"""


@external
@payable
def forward(target: address, data: Bytes[4096]):
    """
    @notice Calls `target` with `data` and `msg.value`, reverting if it reverts.
    @param target The contract to call (the court).
    @param data The calldata.
    """
    raw_call(target, data, value=msg.value)


@external
@payable
def __default__():
    """
    @notice Takes payouts (a withdrawal of this contract's credit).
    """
    pass
