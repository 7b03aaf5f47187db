"""Messaging: the outbox relay, the idempotent inbox, sagas, process managers, the scheduler.

The top of the application layer: it may import ``persistence``, ``readside``
and ``cqrs``; nothing in the application imports it.
"""
