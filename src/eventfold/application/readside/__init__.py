"""The read side: projections over the global log, read models, query options, catch-up.

Imports ``cqrs`` only (a pipeline behaviour waits for projections); the unit of
work above it runs inline projections and serves queries through it.
"""
