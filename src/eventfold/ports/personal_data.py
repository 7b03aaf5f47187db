"""Ports for crypto-shredding: where subject keys are kept, and the cipher that uses them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

__all__ = ["Cipher", "SubjectKeyStore"]


class SubjectKeyStore(Protocol):
    """One secret key per subject (a person), kept in the caller's transaction."""

    async def get_or_create_key(self, subject: str) -> bytes:
        """The subject's key, created (in this transaction) when it has none yet."""
        ...

    async def get_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        """The keys that exist among ``subjects``; a forgotten subject is missing."""
        ...

    async def forget(self, subject: str) -> bool:
        """Delete the subject's key for good; False when there was none."""
        ...


class Cipher(Protocol):
    """Authenticated encryption with a symmetric key (AES-GCM in ``eventfold.adapters.crypto``)."""

    def new_key(self) -> bytes:
        """A fresh random key."""
        ...

    def encrypt(self, key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """Ciphertext (with whatever nonce and tag it needs) bound to ``associated_data``."""
        ...

    def decrypt(self, key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """The plaintext; raises ``ValueError`` when the ciphertext or its data was altered."""
        ...
