"""Backend fixtures come from eventfold's pytest plugin, loaded in tests/conftest.py."""
