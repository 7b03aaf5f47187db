"""Which event fields are personal data, and what they read as once forgotten."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import pytest
from pydantic import BaseModel

from eventfold.adapters.crypto import AesGcmCipher
from eventfold.adapters.memory import create_memory_storage
from eventfold.application.persistence.personal_data import ShreddingStorage, personal_fields
from eventfold.domain.personal_data import PersonalData, personal_data
from eventfold.errors import ConfigurationError
from eventfold.ports import EventRecord
from eventfold.serialization import EventRegistry

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Registered:
    customer_id: str
    name: Annotated[str, PersonalData(subject="customer_id")]
    phone: Annotated[str | None, PersonalData(subject="customer_id")] = None
    age: Annotated[int, PersonalData(subject="customer_id", redacted=0)] = 0


@personal_data("address", subject="customer_id")
@dataclass(frozen=True)
class Moved:
    customer_id: str
    address: str


class Renamed(BaseModel):
    customer_id: uuid.UUID
    name: Annotated[str, PersonalData(subject="customer_id")]


@dataclass(frozen=True)
class Deposited:
    amount: int


def redactions(cls: type) -> dict[str, object]:
    return {field.name: field.redacted for field in personal_fields(cls)}


def test_marked_fields_redact_as_their_type_says() -> None:
    assert redactions(Registered) == {"name": "[forgotten]", "phone": None, "age": 0}


def test_fields_can_be_declared_on_the_class() -> None:
    assert redactions(Moved) == {"address": "[forgotten]"}


def test_pydantic_models_are_marked_the_same_way() -> None:
    assert redactions(Renamed) == {"name": "[forgotten]"}


def test_a_class_without_markers_has_no_personal_fields() -> None:
    assert personal_fields(Deposited) == ()


def test_a_personal_field_of_another_type_must_say_what_it_reads_as() -> None:
    @dataclass(frozen=True)
    class Born:
        customer_id: str
        on: Annotated[datetime, PersonalData(subject="customer_id")]

    with pytest.raises(ConfigurationError, match="redacted="):
        personal_fields(Born)


def test_the_subject_must_be_a_field() -> None:
    @dataclass(frozen=True)
    class Noted:
        text: Annotated[str, PersonalData(subject="person_id")]

    with pytest.raises(ConfigurationError, match="person_id"):
        personal_fields(Noted)


async def test_events_without_personal_fields_are_written_exactly_as_encoded() -> None:
    events = EventRegistry([Registered, Deposited])
    storage = ShreddingStorage(create_memory_storage(), events, AesGcmCipher())
    encoded = events.encode(Deposited(5))
    record = EventRecord(uuid.uuid4(), encoded.type_name, 1, encoded.data, T0)
    async with storage.transaction() as session:
        await session.append("acc-1", [record], expected_version=0)
    async with storage.storage.transaction() as session:
        [stored] = await session.read_stream("acc-1")
    assert stored.data == encoded.data
    async with storage.storage.transaction() as session:
        assert await session.load_documents("eventfold.subject_keys", ["acc-1"]) == []


async def test_a_tampered_ciphertext_does_not_decrypt() -> None:
    cipher = AesGcmCipher()
    key = cipher.new_key()
    sealed = bytearray(cipher.encrypt(key, b'"Ada"', b"c-1"))
    sealed[-1] ^= 1
    with pytest.raises(ValueError, match="decrypt"):
        cipher.decrypt(key, bytes(sealed), b"c-1")


async def test_ciphertext_is_bound_to_its_subject() -> None:
    cipher = AesGcmCipher()
    key = cipher.new_key()
    with pytest.raises(ValueError, match="decrypt"):
        cipher.decrypt(key, cipher.encrypt(key, b'"Ada"', b"c-1"), b"c-2")


async def test_non_string_personal_values_round_trip_and_redact() -> None:
    events = EventRegistry([Registered])
    storage = ShreddingStorage(create_memory_storage(), events, AesGcmCipher())
    encoded = events.encode(Registered("c-1", "Ada", "+44 1", 36))
    record = EventRecord(uuid.uuid4(), encoded.type_name, 1, encoded.data, T0)
    async with storage.transaction() as session:
        await session.append("c-1", [record], expected_version=0)
        [read] = await session.read_stream("c-1")
    assert events.decode(read.type_name, 1, read.data) == Registered("c-1", "Ada", "+44 1", 36)

    await storage.forget("c-1")
    async with storage.transaction() as session:
        [read] = await session.read_stream("c-1")
    assert events.decode(read.type_name, 1, read.data) == Registered("c-1", "[forgotten]", None, 0)
