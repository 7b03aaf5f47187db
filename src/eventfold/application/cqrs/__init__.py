"""Commands and queries: the mediator, its pipeline behaviours and ``OperationResult``.

The bottom of the application layer: it imports nothing from ``readside``,
``persistence`` or ``messaging``.
"""
