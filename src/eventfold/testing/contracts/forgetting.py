"""The forgetting contract: once a person is forgotten, no readable copy of their data stays.

Subclass :class:`ForgettingContract` with two fixtures: ``storage`` (a fresh storage with
its schema) and ``cipher`` (a :class:`~eventfold.ports.personal_data.Cipher`, such as
``AesGcmCipher()`` from ``eventfold.adapters.crypto``). The tests wrap the storage in a
:class:`~eventfold.ShreddingStorage` and check every place a person's data can be copied
to: events and outbox rows, snapshots, state-stored documents, read models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from eventfold.adapters.memory.cache import create_memory_cache
from eventfold.application.persistence.caching import CachingPersistenceDispatcher
from eventfold.application.persistence.dispatcher import (
    PersistenceDispatcher,
    PersistenceRegistry,
    register_aggregate,
    unit_of_work_factories,
)
from eventfold.application.persistence.model import PersistenceModel
from eventfold.application.persistence.personal_data import ShreddingStorage
from eventfold.application.persistence.unit_of_work import DataSource, DataSources, UnitOfWork
from eventfold.application.readside.projections import (
    Projection,
    ProjectionContext,
    ProjectionRunner,
)
from eventfold.application.readside.read_models import DocumentReadModel
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.entity import Entity
from eventfold.domain.personal_data import PersonalData, SubjectForgotten
from eventfold.ports import Storage
from eventfold.ports.personal_data import Cipher
from eventfold.serialization import EventRegistry

__all__ = ["ForgettingContract"]


@dataclass(frozen=True)
class PatientRegistered:
    patient_id: str
    name: Annotated[str, PersonalData(subject="patient_id")]
    email: Annotated[str | None, PersonalData(subject="patient_id")] = None
    ward: str = "general"


@dataclass(frozen=True)
class PatientMoved:
    ward: str


@dataclass
class PatientState:
    name: str = ""
    email: str | None = None
    ward: str = ""

    def apply_PatientRegistered(self, event: PatientRegistered) -> None:  # noqa: N802
        self.name, self.email, self.ward = event.name, event.email, event.ward

    def apply_PatientMoved(self, event: PatientMoved) -> None:  # noqa: N802
        self.ward = event.ward


class Patient(AggregateRoot[PatientState, str]):
    """Event-sourced; its state holds the personal values its events carried."""

    @classmethod
    def register(cls, patient_id: str, name: str, email: str | None = None) -> Patient:
        patient = cls(patient_id)
        patient.record(PatientRegistered(patient_id, name, email))
        return patient

    def move(self, ward: str) -> None:
        self.record(PatientMoved(ward))


@dataclass(frozen=True)
class VisitorSignedIn:
    visitor_id: str
    name: Annotated[str, PersonalData(subject="visitor_id")]


class Visitor(Entity[str]):
    """State-stored: its document holds the name its event carried."""

    name: str
    visits: int

    def __init__(self, visitor_id: str, name: str, visits: int = 0) -> None:
        super().__init__(visitor_id)
        self.name = name
        self.visits = visits

    @classmethod
    def sign_in(cls, visitor_id: str, name: str) -> Visitor:
        visitor = cls(visitor_id, name, 1)
        visitor.record(VisitorSignedIn(visitor_id, name))
        return visitor


@dataclass
class PatientCard:
    patient_id: str
    name: str


cards = DocumentReadModel("contract_patient_cards", PatientCard, key="patient_id")


class PatientCards(Projection):
    """A read model that copies names, and erases a forgotten patient's card."""

    name = "contract_patient_cards"
    read_models = (cards,)

    async def apply_PatientRegistered(  # noqa: N802
        self, event: PatientRegistered, context: ProjectionContext
    ) -> None:
        await cards.documents(context).put(PatientCard(event.patient_id, event.name))

    async def apply_SubjectForgotten(  # noqa: N802
        self, event: SubjectForgotten, context: ProjectionContext
    ) -> None:
        await cards.documents(context).delete(event.subject)


class ForgettingContract:
    """Async pytest tests: a forgotten person's data is readable nowhere eventfold keeps it."""

    projection_timeout = 30.0
    """How long a projection may take to see the latest events (a shared server's
    PostgreSQL log waits for every transaction open on it)."""

    def shredding(self, storage: Storage, cipher: Cipher) -> ShreddingStorage:
        """The storage under test, wrapped so personal data is encrypted."""
        events = EventRegistry([PatientRegistered, PatientMoved, VisitorSignedIn])
        return ShreddingStorage(storage, events, cipher)

    def source(self, shredding: ShreddingStorage, *, snapshot_every: int | None = 1) -> DataSource:
        """Patients event-sourced (snapshotted after every event), visitors state-stored."""
        model = PersistenceModel()
        model.event_sourced(Patient, snapshot_every=snapshot_every)
        model.state_stored(Visitor)
        return DataSource("clinic", shredding, model, shredding.codec.events)

    async def register(self, source: DataSource, patient_id: str, name: str) -> None:
        """Register a patient in a command of its own."""
        async with source.unit_of_work() as uow:
            uow.event_sourced(Patient).add(Patient.register(patient_id, name, f"{name}@x.org"))

    async def patient(self, source: DataSource, patient_id: str) -> PatientState:
        """A patient's state as a command would load it."""
        async with source.unit_of_work() as uow:
            return (await uow.event_sourced(Patient).get_required(patient_id)).state

    # -- snapshots --------------------------------------------------------------------------

    async def test_a_snapshot_holding_personal_data_is_stored_sealed_and_read_in_clear(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding)
        await self.register(source, "p-1", "Ada")

        stored = await _raw_snapshot(storage, "Patient-p-1")
        assert stored is not None
        assert "Ada" not in stored
        async with shredding.transaction() as session:
            snapshot = await session.load_snapshot("Patient-p-1")
        assert snapshot is not None
        assert json.loads(snapshot.data)["name"] == "Ada"

    async def test_once_forgotten_no_snapshot_is_read_and_the_aggregate_folds_redacted_events(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding)
        await self.register(source, "p-1", "Ada")
        async with source.unit_of_work() as uow:
            (await uow.event_sourced(Patient).get_required("p-1")).move("cardiology")

        assert await shredding.forget("p-1")  # no stream named: every snapshot is sealed

        async with shredding.transaction() as session:
            assert await session.load_snapshot("Patient-p-1") is None
        state = await self.patient(source, "p-1")
        assert (state.name, state.email, state.ward) == ("[forgotten]", None, "cardiology")

    async def test_a_snapshot_taken_after_a_forget_holds_only_the_redacted_state(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding)
        await self.register(source, "p-1", "Ada")
        await shredding.forget("p-1")
        async with source.unit_of_work() as uow:
            (await uow.event_sourced(Patient).get_required("p-1")).move("cardiology")

        stored = await _raw_snapshot(storage, "Patient-p-1")
        assert stored is not None
        assert (json.loads(stored)["name"], json.loads(stored)["ward"]) == (
            "[forgotten]",
            "cardiology",
        )

    async def test_forgetting_one_patient_leaves_the_others_snapshot_readable(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding)
        await self.register(source, "p-1", "Ada")
        await self.register(source, "p-2", "Grace")

        await shredding.forget("p-1")

        async with shredding.transaction() as session:
            snapshot = await session.load_snapshot("Patient-p-2")
        assert snapshot is not None
        assert json.loads(snapshot.data)["name"] == "Grace"

    # -- state-stored documents -------------------------------------------------------------

    async def test_a_state_stored_document_holding_personal_data_is_stored_sealed(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        source = self.source(self.shredding(storage, cipher))
        async with source.unit_of_work() as uow:
            uow.state_stored(Visitor).add(Visitor.sign_in("v-1", "Ada"))
        async with source.unit_of_work() as uow:
            (await uow.state_stored(Visitor).get_required("v-1")).visits += 1

        async with source.unit_of_work() as uow:
            visitor = await uow.state_stored(Visitor).get_required("v-1")
        assert (visitor.name, visitor.visits) == ("Ada", 2)
        assert "Ada" not in await _raw_document(storage, "Visitor", "v-1")

    async def test_once_forgotten_a_state_stored_document_with_their_data_reads_as_gone(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding)
        async with source.unit_of_work() as uow:
            uow.state_stored(Visitor).add(Visitor.sign_in("v-1", "Ada"))
            uow.state_stored(Visitor).add(Visitor.sign_in("v-2", "Grace"))

        await shredding.forget("v-1")

        async with source.unit_of_work() as uow:
            assert await uow.state_stored(Visitor).get("v-1") is None
            assert (await uow.state_stored(Visitor).get_required("v-2")).name == "Grace"
        assert "Ada" not in await _raw_document(storage, "Visitor", "v-1")

    # -- the cache -------------------------------------------------------------------------

    async def test_a_cached_aggregate_never_serves_a_forgotten_persons_data(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding)
        registry: PersistenceRegistry[UnitOfWork] = PersistenceRegistry()
        register_aggregate(registry, Patient, source="clinic")
        dispatcher: PersistenceDispatcher[UnitOfWork] = PersistenceDispatcher(
            registry, unit_of_work_factories(DataSources(source))
        )
        cached: CachingPersistenceDispatcher[UnitOfWork] = CachingPersistenceDispatcher(
            dispatcher, create_memory_cache()
        )
        await self.register(source, "p-1", "Ada")
        [before] = await cached.fetch_domain(Patient, ["p-1"])

        await shredding.forget("p-1")

        [after] = await cached.fetch_domain(Patient, ["p-1"])
        assert (before.state.name, after.state.name) == ("Ada", "[forgotten]")

    # -- read models and other services -----------------------------------------------------

    async def test_a_projection_erases_a_forgotten_persons_read_model(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        source = self.source(shredding, snapshot_every=None)
        runner = ProjectionRunner(shredding, shredding.codec.events, [PatientCards()])
        await self.register(source, "p-1", "Ada")
        await self.register(source, "p-2", "Grace")
        await self._project_until(runner, storage, lambda cards: len(cards) == 2, "both cards")

        await shredding.forget("p-1")

        await self._project_until(runner, storage, lambda cards: len(cards) == 1, "p-1 erased")
        assert await _raw_cards(storage) == {"p-2": "Grace"}

    async def test_the_forget_is_announced_in_the_outbox_for_broker_consumers(
        self, storage: Storage, cipher: Cipher
    ) -> None:
        shredding = self.shredding(storage, cipher)
        await self.register(self.source(shredding), "p-1", "Ada")

        await shredding.forget("p-1")

        async with storage.transaction() as session:
            entries = await session.read_outbox(limit=10)
        announced = [e.message for e in entries if e.message.type_name.endswith("Forgotten")]
        assert [(m.type_name, m.aggregate_id, json.loads(m.data)) for m in announced] == [
            ("eventfold.SubjectForgotten", "p-1", {"subject": "p-1"})
        ]

    async def _project_until(
        self,
        runner: ProjectionRunner,
        storage: Storage,
        done: Callable[[dict[str, str]], bool],
        what: str,
    ) -> None:
        # Bounded: the log only shows events once every older transaction has ended.
        try:
            async with asyncio.timeout(self.projection_timeout):
                while not done(await _raw_cards(storage)):
                    await _step(runner.process_batch("contract_patient_cards"))
        except TimeoutError:
            msg = f"the projection did not reach {what} in {self.projection_timeout}s"
            raise AssertionError(msg) from None


async def _step(batch: Awaitable[int]) -> None:
    if not await batch:
        await asyncio.sleep(0.05)  # nothing readable yet: poll again shortly


async def _raw_snapshot(storage: Storage, stream_id: str) -> str | None:
    async with storage.transaction() as session:
        snapshot = await session.load_snapshot(stream_id)
    return None if snapshot is None else snapshot.data


async def _raw_document(storage: Storage, collection: str, key: str) -> str:
    async with storage.transaction() as session:
        document = await session.load_document(collection, key)
    assert document is not None
    return document.data


async def _raw_cards(storage: Storage) -> dict[str, Any]:
    async with storage.transaction() as session:
        documents = await session.load_documents(cards.collection, ["p-1", "p-2"])
    return {d.key: json.loads(d.data)["name"] for d in documents}
