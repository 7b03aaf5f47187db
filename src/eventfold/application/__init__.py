"""The application layer, one subpackage per concern.

Imports between them point one way, checked by import-linter::

    messaging  ->  persistence  ->  readside  ->  cqrs

- ``cqrs``: the mediator, its pipeline behaviours and ``OperationResult``.
- ``readside``: projections, document read models, query options and read-your-writes.
- ``persistence``: the unit of work, repositories, the persistence model and
  dispatcher, caching, personal data.
- ``messaging``: the outbox relay, the idempotent inbox and sagas.
"""
