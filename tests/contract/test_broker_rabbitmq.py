"""The broker contract on RabbitMQ, plus publishing through an outage."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest

from eventfold.adapters.rabbitmq import RabbitMQBroker, create_rabbitmq_broker
from eventfold.errors import PublishError
from eventfold.testing.contracts.broker import BrokerContract, Inbox, make_message
from tests.conftest import RABBITMQ_URL, require_service, unique_name
from tests.support.network import closed_port
from tests.support.outage import (
    consumer_resumes_after_outage,
    publish_fails_while_cut_and_works_after,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    require_service("rabbitmq")
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        yield proxy


def isolated_broker(url: str, name: str = "") -> RabbitMQBroker:
    return create_rabbitmq_broker(url, exchange=name or unique_name("ef"), publish_timeout=5.0)


class TestRabbitMQBroker(BrokerContract):
    @pytest.fixture
    async def broker(self) -> AsyncIterator[RabbitMQBroker]:
        require_service("rabbitmq")
        broker = isolated_broker(RABBITMQ_URL)
        yield broker
        await broker.close()
        await broker.destroy()
        await broker.close()

    @pytest.fixture
    def unreachable_broker(self) -> RabbitMQBroker:
        return create_rabbitmq_broker(f"amqp://guest:guest@127.0.0.1:{closed_port()}/")


async def test_publishing_fails_while_the_network_is_cut_and_works_again_after(
    proxy: TcpProxy,
) -> None:
    broker = isolated_broker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    try:
        await publish_fails_while_cut_and_works_after(broker, proxy)
    finally:
        await broker.close()
        await broker.destroy()
        await broker.close()


async def test_a_subscription_consumes_again_once_the_network_is_back(proxy: TcpProxy) -> None:
    name = unique_name("ef")
    direct = isolated_broker(RABBITMQ_URL, name)
    proxied = isolated_broker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", name)
    try:
        await consumer_resumes_after_outage(proxied, direct, proxy)
    finally:
        for broker in (proxied, direct):
            await broker.close()
            await broker.destroy()
            await broker.close()


@pytest.fixture
async def broker() -> AsyncIterator[RabbitMQBroker]:
    require_service("rabbitmq")
    broker = isolated_broker(RABBITMQ_URL)
    yield broker
    await broker.close()
    await broker.destroy()
    await broker.close()


async def test_a_batch_arrives_whole_and_in_order_with_bodies_larger_than_a_frame(
    broker: RabbitMQBroker,
) -> None:
    inbox = Inbox()
    await broker.subscribe("readers", inbox)
    messages = [make_message(aggregate_id=f"order-{n % 7}") for n in range(1500)]
    big = make_message(aggregate_id="order-big")
    big = type(big)(**{**_fields(big), "data": '"' + "x" * 300_000 + '"'})
    await broker.publish([*messages[:700], big, *messages[700:]])
    received = await inbox.wait_for(1501)
    assert [m.event_id for m in received] == [
        m.event_id for m in [*messages[:700], big, *messages[700:]]
    ]
    assert received[700] == big


async def test_a_message_the_broker_nacks_is_a_publish_error(broker: RabbitMQBroker) -> None:
    await broker.publish([make_message()])  # declares the exchange
    full = f"{broker._topology.exchange}.full"
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            full, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await queue.bind(broker._topology.exchange, routing_key="#")
        with pytest.raises(PublishError):
            await broker.publish([make_message(), make_message(), make_message()])
        await queue.purge()
        await broker.publish([make_message()])
    finally:
        await connection.close()


async def test_publishing_after_the_exchange_vanished_is_a_publish_error_then_works_again(
    broker: RabbitMQBroker,
) -> None:
    await broker.publish([make_message()])
    connection = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(broker._topology.exchange)
    finally:
        await connection.close()
    with pytest.raises(PublishError):
        await broker.publish([make_message() for _ in range(50)])
    await broker.publish([make_message()])  # a new channel declares the exchange again


def _fields(message: object) -> dict[str, object]:
    return {name: getattr(message, name) for name in message.__slots__}  # type: ignore[attr-defined]
