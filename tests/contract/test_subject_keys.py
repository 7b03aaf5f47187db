"""Subject keys on the documents table of every backend."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.testing.contracts.subject_keys import SubjectKeyStoreContract


class TestDocumentSubjectKeys(SubjectKeyStoreContract):
    @pytest.fixture
    def storage(self, any_storage: Any) -> Any:
        return any_storage
