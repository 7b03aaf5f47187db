"""The subject key contract: what a :class:`~eventfold.ports.personal_data.SubjectKeyStore` must do.

Subclass :class:`SubjectKeyStoreContract` with a ``storage`` fixture (a fresh storage with
its schema); override :meth:`~SubjectKeyStoreContract.keys` to test another key store
than the one on the documents table.
"""

from __future__ import annotations

import os

import pytest

from eventfold.application.persistence.personal_data import DocumentSubjectKeys
from eventfold.ports import Storage, StorageSession
from eventfold.ports.personal_data import SubjectKeyStore

__all__ = ["SubjectKeyStoreContract"]


class _AbortError(Exception):
    """Raised to roll a transaction back."""


class SubjectKeyStoreContract:
    """Async pytest tests of a subject key store kept in the caller's transaction."""

    def keys(self, session: StorageSession) -> SubjectKeyStore:
        """The key store under test, in ``session``'s transaction."""
        return DocumentSubjectKeys(session, lambda: os.urandom(32))

    async def test_a_key_is_created_once_per_subject(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            first = await self.keys(session).get_or_create_key("customer-1")
        async with storage.transaction() as session:
            again = await self.keys(session).get_or_create_key("customer-1")
            found = await self.keys(session).get_keys(["customer-1"])
        assert again == first
        assert found == {"customer-1": first}

    async def test_each_subject_has_its_own_key(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            keys = self.keys(session)
            one = await keys.get_or_create_key("customer-1")
            two = await keys.get_or_create_key("customer-2")
        assert one != two

    async def test_get_keys_returns_only_the_subjects_that_have_one(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            created = await self.keys(session).get_or_create_key("customer-1")
        async with storage.transaction() as session:
            found = await self.keys(session).get_keys(["customer-1", "nobody"])
        assert found == {"customer-1": created}

    async def test_a_rolled_back_transaction_leaves_no_key(self, storage: Storage) -> None:
        async def create_then_fail() -> None:
            async with storage.transaction() as session:
                await self.keys(session).get_or_create_key("customer-1")
                raise _AbortError

        with pytest.raises(_AbortError):
            await create_then_fail()
        async with storage.transaction() as session:
            assert await self.keys(session).get_keys(["customer-1"]) == {}

    async def test_a_forgotten_subject_has_no_key(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            old = await self.keys(session).get_or_create_key("customer-1")
            kept = await self.keys(session).get_or_create_key("customer-2")
        async with storage.transaction() as session:
            assert await self.keys(session).forget("customer-1") is True
        async with storage.transaction() as session:
            keys = self.keys(session)
            assert await keys.get_keys(["customer-1", "customer-2"]) == {"customer-2": kept}
            assert await keys.forget("customer-1") is False
            assert await keys.get_or_create_key("customer-1") != old

    async def test_forgetting_in_the_same_transaction_drops_the_key_at_once(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            keys = self.keys(session)
            await keys.get_or_create_key("customer-1")
            await keys.forget("customer-1")
            assert await keys.get_keys(["customer-1"]) == {}
