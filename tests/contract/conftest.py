"""Backend fixtures live in tests/conftest.py so every test tier can use them."""
