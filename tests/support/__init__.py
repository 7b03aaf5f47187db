"""Test helpers that are not shipped: network fault injection."""
