"""What the SQL backends share: the table declarations, table read models and searches."""

from eventfold.adapters.sql.read_model import TableReadModel
from eventfold.adapters.sql.schema import metadata
from eventfold.adapters.sql.specification import search_documents, search_table

__all__ = ["TableReadModel", "metadata", "search_documents", "search_table"]
