"""Outage scenarios shared by the broker test modules."""

from __future__ import annotations

import pytest

from eventfold.errors import BrokerUnavailableError
from eventfold.ports.broker import MessageBroker
from eventfold.testing.contracts.broker import Inbox, make_message
from tests.support.tcp_proxy import TcpProxy


async def publish_fails_while_cut_and_works_after(proxied: MessageBroker, proxy: TcpProxy) -> None:
    """Publish through ``proxy``: fine, then BrokerUnavailableError while cut, then fine again."""
    await proxied.publish([make_message()])
    await proxy.cut()
    with pytest.raises(BrokerUnavailableError):
        await proxied.publish([make_message()])
    await proxy.restore()
    await proxied.publish([make_message()])


async def consumer_resumes_after_outage(
    proxied: MessageBroker, direct: MessageBroker, proxy: TcpProxy
) -> None:
    """A subscription through ``proxy`` receives what is published after the network returns."""
    inbox = Inbox()
    subscription = await proxied.subscribe("survivor", inbox)
    try:
        await proxy.cut()
        await proxy.restore()
        message = make_message()
        await direct.publish([message])
        assert await inbox.wait_for(1) == [message]
    finally:
        await subscription.stop()
