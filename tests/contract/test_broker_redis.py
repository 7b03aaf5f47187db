"""The broker contract on Redis Streams, plus publishing through an outage."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventfold.adapters.redis import RedisStreamsBroker, create_redis_streams_broker
from eventfold.testing.contracts.broker import BrokerContract
from tests.conftest import REDIS_URL, require_service, unique_name
from tests.support.network import closed_port
from tests.support.outage import (
    consumer_resumes_after_outage,
    publish_fails_while_cut_and_works_after,
)
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis


def isolated_broker(url: str, name: str = "") -> RedisStreamsBroker:
    name = name or unique_name("ef")
    return create_redis_streams_broker(url, prefix=name, publish_timeout=3.0)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    require_service("redis")
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        yield proxy


class TestRedisStreamsBroker(BrokerContract):
    @pytest.fixture
    async def broker(self) -> AsyncIterator[RedisStreamsBroker]:
        require_service("redis")
        broker = isolated_broker(REDIS_URL)
        yield broker
        await broker.close()
        await broker.destroy()
        await broker.close()

    @pytest.fixture
    def unreachable_broker(self) -> RedisStreamsBroker:
        return create_redis_streams_broker(f"redis://127.0.0.1:{closed_port()}/0")


async def test_publishing_fails_while_the_network_is_cut_and_works_again_after(
    proxy: TcpProxy,
) -> None:
    broker = isolated_broker(f"redis://127.0.0.1:{proxy.port}/0")
    try:
        await publish_fails_while_cut_and_works_after(broker, proxy)
    finally:
        await broker.close()
        await broker.destroy()
        await broker.close()


async def test_a_subscription_consumes_again_once_the_network_is_back(proxy: TcpProxy) -> None:
    name = unique_name("ef")
    direct = isolated_broker(REDIS_URL, name)
    proxied = isolated_broker(f"redis://127.0.0.1:{proxy.port}/0", name)
    try:
        await consumer_resumes_after_outage(proxied, direct, proxy)
    finally:
        for broker in (proxied, direct):
            await broker.close()
            await broker.destroy()
            await broker.close()
