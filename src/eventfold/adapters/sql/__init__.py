"""What the SQL backends share: table declarations and read models in a user's tables."""

from eventfold.adapters.sql.read_model import RowBuffer, TableReadModel, create_read_models
from eventfold.adapters.sql.schema import metadata
from eventfold.adapters.sql.specification import search_table

__all__ = ["RowBuffer", "TableReadModel", "create_read_models", "metadata", "search_table"]
