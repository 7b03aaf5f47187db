"""Persistence: the unit of work, repositories, the persistence model and dispatcher.

Imports ``readside`` (inline projections, query options) and ``cqrs`` (the
transaction behaviour); ``messaging`` builds on it.
"""
