"""AES-256-GCM for crypto-shredding, from the ``cryptography`` package (extra ``crypto``)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["AesGcmCipher"]

_NONCE_SIZE = 12  # 96 bits, the size GCM is specified for


class AesGcmCipher:
    """AES-256-GCM; a random 96-bit nonce is prepended to each ciphertext."""

    __slots__ = ()

    def new_key(self) -> bytes:
        """A fresh random 256-bit key."""
        return AESGCM.generate_key(bit_length=256)

    def encrypt(self, key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """``nonce || ciphertext || tag``."""
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)

    def decrypt(self, key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """The plaintext, or ``ValueError`` when anything was altered."""
        nonce, sealed = ciphertext[:_NONCE_SIZE], ciphertext[_NONCE_SIZE:]
        try:
            return AESGCM(key).decrypt(nonce, sealed, associated_data)
        except InvalidTag as exc:
            msg = "personal data does not decrypt with the subject's key"
            raise ValueError(msg) from exc
