"""What the SQL backends share: the table declarations."""

from eventfold.adapters.sql.schema import metadata

__all__ = ["metadata"]
