"""A scheduler worker in a process of its own, for crash tests.

``python -m tests.support.scheduler_process <database url> <lease seconds>``: fires due
messages with :func:`count_effect` through the inbox, prints ``applied <schedule id>``
once the effect committed, then hangs before recording the message fired, so that the
test can SIGKILL it in exactly that window.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta

from eventfold.adapters.scheduling import schedule_store_for
from eventfold.adapters.url import storage_from_url
from eventfold.application.messaging.scheduler import ScheduledInbox, Scheduler
from eventfold.ports import ClaimedMessage, StorageSession

EFFECTS = "effects"


async def count_effect(claimed: ClaimedMessage, session: StorageSession) -> None:
    """Add one to the document ``effects/<schedule id>``: the effect a message has."""
    key = claimed.message.schedule_id
    current = await session.load_document(EFFECTS, key)
    count = 0 if current is None else json.loads(current.data)["count"]
    version = 0 if current is None else current.version
    await session.save_document(
        EFFECTS, key, json.dumps({"count": count + 1}), expected_version=version
    )


async def main(url: str, lease: float) -> None:
    storage = storage_from_url(url)
    inbox = ScheduledInbox(storage, "effects", count_effect)

    async def apply_then_hang(claimed: ClaimedMessage) -> None:
        await inbox(claimed)
        print(f"applied {claimed.message.schedule_id}", flush=True)
        await asyncio.Event().wait()  # killed here: applied, not recorded fired

    scheduler = Scheduler(
        schedule_store_for(storage), apply_then_hang, lease=timedelta(seconds=lease)
    )
    print("ready", flush=True)
    await scheduler.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
