"""A projection worker in a process of its own: ``python -m tests.support.projection_worker``.

Arguments: a database URL (``postgresql://…?schema=s`` or ``sqlite:///file``) and the
lease in seconds. It runs the contract suite's per-stream ledger (four partitions) until
it is killed or its standard input closes.
"""

from __future__ import annotations

import asyncio
import sys

from eventfold.adapters.url import storage_from_url
from eventfold.application.readside.workers import ProjectionWorker
from eventfold.serialization import EventRegistry
from eventfold.testing.contracts.projections import Deposited, StreamLedger, Withdrawn


async def main(url: str, lease: float) -> None:
    storage = storage_from_url(url)
    worker = ProjectionWorker(
        storage, EventRegistry([Deposited, Withdrawn]), [StreamLedger()], lease_seconds=lease,
        batch_size=20,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    print("ready", flush=True)
    # Run until the test closes our standard input (or kills us).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    worker.stop()
    await task
    await storage.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
