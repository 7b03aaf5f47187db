"""Given / when / then for process managers: the reactions' outcome, with no storage."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventfold.testing import ProcessScenario
from eventfold.testing.contracts.processes import (
    T0,
    CancelOrder,
    Fulfilment,
    OrderPlaced,
    PaymentReceived,
    PaymentTimedOut,
    RequestPayment,
    ShipOrder,
    fulfilment_process,
)


async def test_an_order_asks_for_payment_and_schedules_its_timeout() -> None:
    outcome = await (
        ProcessScenario(fulfilment_process())
        .when(OrderPlaced("o-1", 30))
        .then(sent=[RequestPayment("o-1", 30)], scheduled=[PaymentTimedOut("o-1")])
    )
    assert outcome.scheduled[0][1] == T0 + timedelta(minutes=15)


async def test_a_payment_ships_the_order_and_cancels_the_timeout() -> None:
    await (
        ProcessScenario(fulfilment_process())
        .given(OrderPlaced("o-1", 30))
        .when(PaymentReceived("o-1"))
        .then(
            state=Fulfilment("o-1", "shipped", ["placed", "paid"]),
            sent=[ShipOrder("o-1")],
            cancelled=["PaymentTimedOut"],
            completed=True,
        )
    )


async def test_a_timeout_cancels_the_order_and_a_late_payment_does_nothing() -> None:
    await (
        ProcessScenario(fulfilment_process())
        .given(OrderPlaced("o-1", 30), PaymentTimedOut("o-1"))
        .when(PaymentReceived("o-1"))
        .then(sent=[], completed=False)
    )
    await (
        ProcessScenario(fulfilment_process())
        .given(OrderPlaced("o-1", 30))
        .when(PaymentTimedOut("o-1"))
        .then(sent=[CancelOrder("o-1")], completed=True)
    )


async def test_then_fails_with_what_was_sent_instead() -> None:
    scenario = ProcessScenario(fulfilment_process()).when(OrderPlaced("o-1", 30))
    with pytest.raises(AssertionError, match="RequestPayment"):
        await scenario.then(sent=[])
