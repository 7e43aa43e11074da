# pragma version ~=0.4.3
"""
@title Reenter
@custom:contract-name Reenter
@license MIT
@notice Test only: a payee whose fallback calls the court's `withdraw` again
        while the first `withdraw` is still paying it out. The court must
        refuse the nested call; `reentered` records whether it succeeded.
"""


interface Court:
    def withdraw(): nonpayable


# @dev The court whose `withdraw` is re-entered.
court: public(immutable(address))
# @dev Whether the fallback has made its one re-entrant attempt.
attempted: public(bool)
# @dev Whether the re-entrant `withdraw` succeeded (it must not).
reentered: public(bool)


@deploy
def __init__(court_: address):
    """
    @dev Points the attacker at `court_`.
    @param court_ The court to attack.
    """
    court = court_


@external
def withdrawFromCourt():
    """
    @notice Withdraws this contract's credit, which triggers the fallback.
    """
    extcall Court(court).withdraw()


@external
@payable
def __default__():
    """
    @notice On the first payment, calls `withdraw` again without reverting.
    """
    if not self.attempted:
        self.attempted = True
        self.reentered = raw_call(court, method_id("withdraw()"), revert_on_failure=False)
