"""Forgetting a person on every backend: no readable copy of their data stays."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.adapters.crypto import AesGcmCipher
from eventfold.testing.contracts.forgetting import ForgettingContract


class TestForgetting(ForgettingContract):
    @pytest.fixture
    def storage(self, any_storage: Any) -> Any:
        return any_storage

    @pytest.fixture
    def cipher(self) -> AesGcmCipher:
        return AesGcmCipher()
