"""A saga whose compensation fails until a test says otherwise, for ``eventfold sagas retry``."""

from __future__ import annotations

from dataclasses import dataclass

from eventfold.adapters.url import storage_from_url
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.sagas import Saga, SagaOrchestrator, Step, StepContext

REFUND_FAILS = {"now": True}
"""While True, undoing the charge fails: the saga ends waiting for a person."""


@dataclass
class Payment:
    order_id: str


async def charge(data: Payment, context: StepContext) -> None:
    """Charge the card (nothing to do here)."""


async def refund(data: Payment, context: StepContext) -> None:
    """Undo the charge, or fail while the payment service is down."""
    if REFUND_FAILS["now"]:
        raise ConnectionError("the payment service is down")


async def ship(data: Payment, context: StepContext) -> None:
    """Shipping always fails: the saga compensates."""
    raise RuntimeError("no courier")


SAGA = Saga(
    "pay-and-ship",
    Payment,
    [Step("charge", charge, refund), Step("ship", ship)],
    retry=RetryPolicy(max_attempts=2, initial=0, maximum=0, jitter=0),
)


def make(database_url: str) -> SagaOrchestrator:
    """The orchestrator ``eventfold sagas retry --orchestrator`` loads."""
    return SagaOrchestrator(storage_from_url(database_url), [SAGA])
