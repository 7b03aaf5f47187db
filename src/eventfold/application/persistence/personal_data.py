"""Crypto-shredding: personal fields of events are stored encrypted with a key per subject.

Events are never rewritten. To forget a person, their key is deleted: the ciphertext left
in the event log and the outbox can no longer be read, and those fields read as a
redaction value (``"[forgotten]"``, ``None``, or what the field declares) instead. The
events still decode, so aggregates and projections still rebuild.

:class:`ShreddingStorage` wraps any :class:`~eventfold.ports.Storage`. Its sessions
encrypt the personal fields of events as they are appended and written to the outbox,
and decrypt them as streams and the global log are read, in the caller's transaction:
a subject's key is created in the transaction of the command that first records their
data (a rolled-back command leaves no key), and ``forget_subject`` deletes it in the
transaction it runs in. Keys live in the documents table (collection
``eventfold.subject_keys``), so every backend keeps them.

Encryption sits here, at the storage boundary, rather than in the
:class:`~eventfold.serialization.EventRegistry`: encoding is synchronous and knows no
transaction, while a key is read (or created) in one. Event types without personal
fields are decided once per type name and pass through untouched.
"""

from __future__ import annotations

import base64
import json
import types
import typing
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import uuid4

from eventfold.domain.events import event_name
from eventfold.domain.personal_data import (
    FORGOTTEN,
    NOT_SET,
    PersonalData,
    SubjectForgotten,
    declared_personal_fields,
)
from eventfold.errors import ConfigurationError, SerializationError, UnknownEventTypeError
from eventfold.ports import (
    AppendEvents,
    DocumentRecord,
    DocumentStore,
    EventRecord,
    ExpectedVersion,
    LogPosition,
    OutboxMessage,
    SaveDocument,
    SnapshotRecord,
    Storage,
    StorageSession,
    StoredEvent,
    StreamState,
    Write,
)
from eventfold.ports.personal_data import Cipher, SubjectKeyStore
from eventfold.serialization import EventRegistry

__all__ = [
    "KEY_COLLECTION",
    "DocumentSubjectKeys",
    "PersonalDataCodec",
    "ShreddingStorage",
    "forget_subject",
    "watching_personal_data",
]

R = TypeVar("R", EventRecord, OutboxMessage)

KEY_COLLECTION = "eventfold.subject_keys"
"""The document collection subject keys are kept in."""

FORGOTTEN_SNAPSHOT = "eventfold.forgotten"
"""The state type of a snapshot invalidated by :func:`forget_subject`: never read back."""

_SEALED_PREFIX = "pd1:"  # prefix of an encrypted value; the version lets the format change later


# -- who saw personal data ---------------------------------------------------------------

_revealed: ContextVar[list[bool] | None] = ContextVar("eventfold_revealed", default=None)


@contextmanager
def watching_personal_data() -> Iterator[Callable[[], bool]]:
    """Notes whether a :class:`ShreddingSession` revealed anyone's personal data in the block.

    A cache uses it to keep no copy of a person's data, which a forget could not reach.
    """
    seen = [False]
    token = _revealed.set(seen)
    try:
        yield lambda: seen[0]
    finally:
        _revealed.reset(token)


def _note_revealed() -> None:
    seen = _revealed.get()
    if seen is not None:
        seen[0] = True


# -- subject keys --------------------------------------------------------------------------


class DocumentSubjectKeys:
    """A :class:`SubjectKeyStore` on the documents table, in the session's transaction.

    Keys read or created are remembered for the life of this object (one transaction);
    nothing is cached across transactions, so a forgotten key is gone for every reader
    that starts after the forgetting committed.
    """

    __slots__ = ("_cache", "_collection", "_documents", "_new_key")

    def __init__(
        self,
        documents: DocumentStore,
        new_key: Callable[[], bytes] | None = None,
        *,
        collection: str = KEY_COLLECTION,
    ) -> None:
        self._documents = documents
        self._new_key = new_key
        self._collection = collection
        self._cache: dict[str, bytes] = {}

    async def get_or_create_key(self, subject: str) -> bytes:
        """The subject's key, created (in this transaction) when it has none yet."""
        key = self._cache.get(subject)
        if key is None:
            key = (await self.get_keys((subject,))).get(subject)
        if key is None:
            if self._new_key is None:
                msg = "this key store was made without new_key: it cannot create keys"
                raise ConfigurationError(msg)
            key = self._new_key()
            # Two commands creating the same subject's first key race on this insert; the
            # loser gets a ConcurrencyError and its retry reads the winner's key.
            await self._documents.save_document(
                self._collection, subject, _key_document(key), expected_version=0
            )
            self._cache[subject] = key
        return key

    async def get_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        """The keys that exist among ``subjects`` (one query for those not yet read)."""
        cache = self._cache
        missing = [subject for subject in dict.fromkeys(subjects) if subject not in cache]
        if missing:
            for document in await self._documents.load_documents(self._collection, missing):
                cache[document.key] = _read_key_document(document.data)
        return {subject: cache[subject] for subject in subjects if subject in cache}

    async def forget(self, subject: str) -> bool:
        """Delete the subject's key; False when there was none."""
        self._cache.pop(subject, None)
        document = await self._documents.load_document(self._collection, subject)
        if document is None:
            return False
        await self._documents.delete_document(
            self._collection, subject, expected_version=document.version
        )
        return True


def _key_document(key: bytes) -> str:
    return json.dumps({"key": base64.b64encode(key).decode()})


def _read_key_document(data: str) -> bytes:
    return base64.b64decode(json.loads(data)["key"])


# -- which fields are personal -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    subject: str
    redacted: Any


def personal_fields(cls: type) -> tuple[_Field, ...]:
    """The personal fields of an event class (empty for most classes), checked for sense."""
    hints = typing.get_type_hints(cls, include_extras=True)
    markers = {name: marker for name, hint in hints.items() if (marker := _marker(hint))}
    markers.update(declared_personal_fields(cls))
    fields = []
    for name, marker in markers.items():
        if name not in hints or marker.subject not in hints:
            msg = (
                f"{cls.__qualname__}: personal field {name!r} or its subject field "
                f"{marker.subject!r} is not a field of the class"
            )
            raise ConfigurationError(msg)
        fields.append(_Field(name, marker.subject, _redaction(cls, name, hints[name], marker)))
    return tuple(fields)


def _marker(hint: Any) -> PersonalData | None:
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    found = [item for item in hint.__metadata__ if isinstance(item, PersonalData)]
    return found[0] if found else None


def _redaction(cls: type, name: str, hint: Any, marker: PersonalData) -> Any:
    if marker.redacted is not NOT_SET:
        return marker.redacted
    if typing.get_origin(hint) is typing.Annotated:
        hint = hint.__origin__
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    ):
        return None
    if hint is str:
        return FORGOTTEN
    msg = (
        f"{cls.__qualname__}.{name} is personal data of type {hint!r}: say what it reads "
        f"as once forgotten with PersonalData(subject=..., redacted=...)"
    )
    raise ConfigurationError(msg)


# -- encrypting and decrypting payloads ----------------------------------------------------


class PersonalDataCodec:
    """Encrypts and decrypts the personal fields of stored event payloads (JSON text)."""

    def __init__(self, events: EventRegistry, cipher: Cipher) -> None:
        self.events = events
        self.cipher = cipher
        self._fields: dict[str, tuple[_Field, ...]] = {}

    def fields_of(self, type_name: str) -> tuple[_Field, ...]:
        """The personal fields of a type name; decided once per name."""
        found = self._fields.get(type_name)
        if found is None:
            try:
                cls = self.events.class_of(type_name)
            except UnknownEventTypeError:
                # Not registered yet: decide when it is (the registry raises on decode).
                return ()
            found = self._fields[type_name] = personal_fields(cls)
        return found

    async def protect(
        self,
        keys: SubjectKeyStore,
        type_name: str,
        data: str,
        subjects: set[str] | None = None,
    ) -> str:
        """``data`` with each personal field encrypted under its subject's key.

        The subjects whose values were encrypted are added to ``subjects`` when given.
        """
        payload = json.loads(data)
        for field in self.fields_of(type_name):
            value = payload.get(field.name)
            if value is None or _is_token(value):
                continue
            subject = _subject(payload, field, type_name)
            if subjects is not None:
                subjects.add(subject)
            key = await keys.get_or_create_key(subject)
            plaintext = json.dumps(value, separators=(",", ":")).encode()
            sealed = self.cipher.encrypt(key, plaintext, _bound_to(subject, field.name))
            payload[field.name] = _SEALED_PREFIX + base64.b64encode(sealed).decode()
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    async def reveal(
        self,
        keys: SubjectKeyStore,
        stored: list[StoredEvent],
        seen: dict[str, set[str]] | None = None,
    ) -> list[StoredEvent]:
        """Events with personal fields decrypted, or redacted where the key is gone.

        ``seen`` collects, per stream, the subjects whose values were decrypted.
        """
        personal = [(i, e, self.fields_of(e.type_name)) for i, e in enumerate(stored)]
        personal = [item for item in personal if item[2]]
        if not personal:
            return stored
        payloads = [json.loads(event.data) for _, event, _ in personal]
        subjects = {
            str(payload.get(field.subject))
            for payload, (_, _, fields) in zip(payloads, personal, strict=True)
            for field in fields
        }
        found = await keys.get_keys(subjects)
        revealed = list(stored)
        for payload, (index, event, fields) in zip(payloads, personal, strict=True):
            for field in fields:
                subject = self._reveal_field(payload, field, found)
                if subject is not None:
                    _note_revealed()
                    if seen is not None:
                        seen.setdefault(event.stream_id, set()).add(subject)
            data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            revealed[index] = replace(event, data=data)
        return revealed

    def _reveal_field(
        self, payload: dict[str, Any], field: _Field, keys: dict[str, bytes]
    ) -> str | None:
        """Decrypt or redact one field in place; the subject when it was decrypted."""
        value = payload.get(field.name)
        if not _is_token(value):
            return None  # stored before the field was marked personal, or null
        subject = str(payload.get(field.subject))
        key = keys.get(subject)
        if key is None:
            payload[field.name] = field.redacted
            return None
        sealed = base64.b64decode(value[len(_SEALED_PREFIX) :])
        plaintext = self.cipher.decrypt(key, sealed, _bound_to(subject, field.name))
        payload[field.name] = json.loads(plaintext)
        return subject

    async def seal(self, keys: SubjectKeyStore, subjects: Collection[str], data: str) -> str:
        """``data`` (a snapshot or a document) sealed so that every subject's key is needed.

        A random data key encrypts the text; it is split into one share per subject
        (XOR), each share encrypted under that subject's key: forgetting any one of them
        makes the text unreadable.
        """
        ordered = sorted(subjects)
        found = await keys.get_keys(ordered)
        data_key = self.cipher.new_key()
        shares = [self.cipher.new_key() for _ in ordered[1:]]
        shares.insert(0, _xor(data_key, *shares))
        sealed_shares = [
            base64.b64encode(
                self.cipher.encrypt(found[subject], share, _bound_to(subject, _SHARE))
            ).decode()
            for subject, share in zip(ordered, shares, strict=True)
        ]
        body = self.cipher.encrypt(data_key, data.encode(), _SHARE.encode())
        return json.dumps(
            {
                _SEALED_MARK: 1,
                "subjects": ordered,
                "shares": sealed_shares,
                "data": base64.b64encode(body).decode(),
            }
        )

    async def unseal(self, keys: SubjectKeyStore, data: str) -> tuple[str, list[str]] | None:
        """The text :meth:`seal` sealed and its subjects; None once one of them is forgotten."""
        sealed = json.loads(data)
        subjects: list[str] = sealed["subjects"]
        found = await keys.get_keys(subjects)
        if len(found) < len(subjects):
            return None
        shares = [
            self.cipher.decrypt(found[subject], base64.b64decode(share), _bound_to(subject, _SHARE))
            for subject, share in zip(subjects, sealed["shares"], strict=True)
        ]
        body = base64.b64decode(sealed["data"])
        return self.cipher.decrypt(_xor(*shares), body, _SHARE.encode()).decode(), subjects


_SEALED_MARK = "eventfold.sealed"  # key of a sealed snapshot or document's JSON object
_SHARE = "eventfold.share"  # associated data of a sealed text and its key shares


def _is_sealed(data: str) -> bool:
    # A substring test first: most snapshots and documents are not sealed. (PostgreSQL's
    # jsonb reorders keys, so the mark may be anywhere in the text.)
    if f'"{_SEALED_MARK}"' not in data:
        return False
    parsed = json.loads(data)
    return isinstance(parsed, dict) and parsed.get(_SEALED_MARK) == 1 and "shares" in parsed


def _xor(first: bytes, *others: bytes) -> bytes:
    result = bytearray(first)
    for other in others:
        for index, byte in enumerate(other):
            result[index] ^= byte
    return bytes(result)


def _is_token(value: object) -> typing.TypeGuard[str]:
    return isinstance(value, str) and value.startswith(_SEALED_PREFIX)


def _subject(payload: dict[str, Any], field: _Field, type_name: str) -> str:
    subject = payload.get(field.subject)
    if subject is None:
        msg = (
            f"{type_name}.{field.name} is personal data but its subject {field.subject!r} is empty"
        )
        raise SerializationError(msg)
    return str(subject)


def _bound_to(subject: str, field: str) -> bytes:
    # The ciphertext is bound to its subject and field: it cannot be moved to another one.
    return f"{subject}\x00{field}".encode()


# -- the storage wrapper -------------------------------------------------------------------


class ShreddingStorage:
    """A storage whose sessions encrypt personal fields on write and decrypt them on read.

    What is encrypted: personal fields of event payloads appended to streams and written
    to the outbox. What is sealed whole: a snapshot of a stream, and a state-stored
    document, whose events carried someone's personal data - under the keys of every
    such subject, so that forgetting any one of them makes it unreadable (a snapshot then
    reads as absent and the aggregate folds its redacted events; a document reads as
    not found). What is decrypted: ``read_stream`` and ``read_log`` (repositories,
    projections), snapshots and documents. The outbox is relayed as stored, so a broker
    consumer receives the personal fields as ``"pd1:..."`` ciphertext tokens. Every other
    operation passes through to the wrapped storage.
    """

    def __init__(
        self,
        storage: Storage,
        events: EventRegistry,
        cipher: Cipher,
        *,
        collection: str = KEY_COLLECTION,
    ) -> None:
        self.storage = storage
        if not events.is_registered(SubjectForgotten):
            events.register(SubjectForgotten)
        self.codec = PersonalDataCodec(events, cipher)
        self.collection = collection

    @property
    def name(self) -> str:
        """The wrapped storage's name."""
        return self.storage.name

    def transaction(self) -> AbstractAsyncContextManager[StorageSession]:
        """One transaction of the wrapped storage, with personal fields protected."""
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[StorageSession]:
        async with self.storage.transaction() as session:
            keys = DocumentSubjectKeys(
                session, self.codec.cipher.new_key, collection=self.collection
            )
            yield cast("StorageSession", ShreddingSession(session, self.codec, keys))

    async def create_schema(self) -> None:
        """Create the wrapped storage's tables."""
        await self.storage.create_schema()

    async def close(self) -> None:
        """Close the wrapped storage."""
        await self.storage.close()

    async def forget(self, subject: str, *, snapshots: Sequence[str] = ()) -> bool:
        """Forget ``subject`` in a transaction of its own (see :func:`forget_subject`)."""
        async with self.transaction() as session:
            return await forget_subject(session, subject, snapshots=snapshots)

    def __getattr__(self, name: str) -> Any:
        # Backend extras (``wait_for_events``, relay stores ...) are the wrapped storage's.
        return getattr(self.storage, name)


class ShreddingSession:
    """A storage session that encrypts and decrypts personal fields (see ShreddingStorage)."""

    def __init__(
        self, session: StorageSession, codec: PersonalDataCodec, keys: DocumentSubjectKeys
    ) -> None:
        self.session = session
        self.codec = codec
        self.keys = keys
        # The stream record and the outbox row of an event share one ciphertext.
        self._sealed: dict[Any, str] = {}
        self._event_subjects: dict[Any, set[str]] = {}
        # Whose personal data each stream's state and each document may hold, as far as
        # this transaction has seen: events read or written, snapshots and documents read.
        self._holds: dict[str, set[str]] = {}

    async def append(
        self, stream_id: str, events: Sequence[EventRecord], *, expected_version: ExpectedVersion
    ) -> int:
        """Append with personal fields encrypted."""
        protected = [await self._protect_record(record, _stream(stream_id)) for record in events]
        return await self.session.append(stream_id, protected, expected_version=expected_version)

    async def add_to_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Write outbox rows with personal fields encrypted."""
        await self.session.add_to_outbox(
            [await self._protect_record(m, _owner_document(m)) for m in messages]
        )

    async def write_batch(self, writes: Sequence[Write]) -> None:
        """Apply a batch with personal data protected: fields of events, sealed states.

        Events and outbox rows go first, so that a snapshot or document of the same batch
        knows whose data it holds.
        """
        protected: dict[int, Write] = {}
        for index, write in enumerate(writes):
            if isinstance(write, AppendEvents):
                scope = _stream(write.stream_id)
                events = [await self._protect_record(record, scope) for record in write.events]
                protected[index] = replace(write, events=events)
            elif isinstance(write, OutboxMessage):
                protected[index] = await self._protect_record(write, _owner_document(write))
        for index, write in enumerate(writes):
            if isinstance(write, SnapshotRecord):
                snapshot = await self._seal_snapshot(write)
                if snapshot is not None:
                    protected[index] = snapshot
            elif isinstance(write, SaveDocument):
                protected[index] = await self._seal_document(write)
            elif index not in protected:
                protected[index] = write
        await self.session.write_batch([protected[i] for i in sorted(protected)])

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Save a snapshot, sealed under the keys of every subject whose data it may hold."""
        sealed = await self._seal_snapshot(snapshot)
        if sealed is not None:
            await self.session.save_snapshot(sealed)

    async def load_snapshot(self, stream_id: str) -> SnapshotRecord | None:
        """A snapshot unsealed; None once a subject it holds was forgotten (fold instead)."""
        snapshot = await self.session.load_snapshot(stream_id)
        if snapshot is None or not _is_sealed(snapshot.data):
            return snapshot
        opened = await self.codec.unseal(self.keys, snapshot.data)
        if opened is None:
            return None
        _note_revealed()
        self._holds.setdefault(_stream(stream_id), set()).update(opened[1])
        return replace(snapshot, data=opened[0])

    async def save_document(
        self, collection: str, key: str, data: str, *, expected_version: int
    ) -> int:
        """Save a document, sealed when it holds a subject's personal data."""
        sealed = await self._seal_document(SaveDocument(collection, key, data, expected_version))
        return await self.session.save_document(
            collection, key, sealed.data, expected_version=expected_version
        )

    async def load_document(self, collection: str, key: str) -> DocumentRecord | None:
        """A document unsealed; None once a subject whose data it held was forgotten."""
        document = await self.session.load_document(collection, key)
        return None if document is None else await self._unseal_document(document)

    async def load_documents(self, collection: str, keys: Sequence[str]) -> list[DocumentRecord]:
        """Documents unsealed; those holding a forgotten subject's data are left out."""
        documents = await self.session.load_documents(collection, keys)
        opened = [await self._unseal_document(document) for document in documents]
        return [document for document in opened if document is not None]

    async def _seal_snapshot(self, snapshot: SnapshotRecord) -> SnapshotRecord | None:
        subjects = self._holds.get(_stream(snapshot.stream_id))
        if not subjects:
            return snapshot
        if len(await self.keys.get_keys(subjects)) < len(subjects):
            # Someone was forgotten since this state was read: it may still hold their
            # data in clear, so it is not kept. The next load folds the redacted events.
            return None
        return replace(snapshot, data=await self.codec.seal(self.keys, subjects, snapshot.data))

    async def _seal_document(self, write: SaveDocument) -> SaveDocument:
        subjects = self._holds.get(_document(write.collection, write.key))
        if not subjects:
            return write
        found = await self.keys.get_keys(subjects)
        live = {subject for subject in subjects if subject in found}
        if not live:
            return write
        return replace(write, data=await self.codec.seal(self.keys, live, write.data))

    async def _unseal_document(self, document: DocumentRecord) -> DocumentRecord | None:
        if not _is_sealed(document.data):
            return document
        opened = await self.codec.unseal(self.keys, document.data)
        if opened is None:
            return None
        _note_revealed()
        self._holds.setdefault(_document(document.collection, document.key), set()).update(
            opened[1]
        )
        return replace(document, data=opened[0])

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[StoredEvent]:
        """A stream's events with personal fields decrypted (or redacted once forgotten)."""
        stored = await self.session.read_stream(
            stream_id, from_version=from_version, to_version=to_version, as_of=as_of
        )
        seen: dict[str, set[str]] = {}
        revealed = await self.codec.reveal(self.keys, stored, seen)
        for subjects in seen.values():
            self._holds.setdefault(_stream(stream_id), set()).update(subjects)
        return revealed

    async def read_log(
        self, *, after: LogPosition, limit: int, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """The global log with personal fields decrypted (or redacted once forgotten)."""
        stored = await self.session.read_log(after=after, limit=limit, types=types)
        return await self.codec.reveal(self.keys, stored)

    async def _protect_record(self, record: R, scope: str) -> R:
        if not self.codec.fields_of(record.type_name):
            return record
        data = self._sealed.get(record.event_id)
        if data is None:
            subjects = self._event_subjects[record.event_id] = set()
            data = await self.codec.protect(self.keys, record.type_name, record.data, subjects)
            self._sealed[record.event_id] = data
        subjects = self._event_subjects.get(record.event_id, set())
        if subjects:
            self._holds.setdefault(scope, set()).update(subjects)
        return replace(record, data=data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def _stream(stream_id: str) -> str:
    return f"stream\x00{stream_id}"


def _document(collection: str, key: str) -> str:
    return f"document\x00{collection}\x00{key}"


def _owner_document(message: OutboxMessage) -> str:
    # A state-stored entity's document is keyed by its type name and id, as its events'
    # outbox rows are: the document holds what those events carried.
    return _document(message.aggregate_type, message.aggregate_id)


async def forget_subject(
    session: StorageSession, subject: str, *, snapshots: Sequence[str] = ()
) -> bool:
    """Delete ``subject``'s key in ``session``'s transaction; False when it had none.

    From then on their personal fields read as redacted everywhere, and the snapshots and
    state-stored documents sealed under their key can no longer be read. ``snapshots``
    names streams whose snapshots are replaced outright as well (for snapshots written
    before sealing existed, or through a storage that is not a ShreddingStorage).
    """
    if isinstance(session, ShreddingSession):
        keys, inner = session.keys, session.session
    else:
        keys, inner = DocumentSubjectKeys(session), session
    for stream_id in snapshots:
        await _invalidate_snapshot(inner, stream_id)
    if not await keys.forget(subject):
        return False
    await _announce(inner, subject)
    return True


FORGOTTEN_STREAM = "eventfold.forgotten-"
"""Prefix of the stream a :class:`SubjectForgotten` event is written to, then the subject."""


async def _announce(session: StorageSession, subject: str) -> None:
    # In the log for projections (read models built from the subject's events), in the
    # outbox for broker consumers (copies kept by other services): both must erase.
    event_id, now = uuid4(), datetime.now(UTC)
    type_name, data = event_name(SubjectForgotten), json.dumps({"subject": subject})
    record = EventRecord(event_id, type_name, 1, data, now)
    await session.append(f"{FORGOTTEN_STREAM}{subject}", [record], expected_version=StreamState.ANY)
    await session.add_to_outbox(
        [OutboxMessage(event_id, type_name, 1, "eventfold.subject", subject, data, now)]
    )


async def _invalidate_snapshot(session: StorageSession, stream_id: str) -> None:
    snapshot = await session.load_snapshot(stream_id)
    if snapshot is None:
        return
    # The snapshot port replaces, it does not delete: a snapshot of a type no model has
    # is ignored by every load, and the next one due replaces it.
    await session.save_snapshot(
        SnapshotRecord(
            stream_id, snapshot.version, FORGOTTEN_SNAPSHOT, 0, "null", snapshot.taken_at
        )
    )
