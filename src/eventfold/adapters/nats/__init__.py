"""NATS JetStream broker (nats-py): one stream, durable pull consumers, dead-letter stream."""

from eventfold.adapters.nats.broker import NatsBroker, NatsSubscription, create_nats_broker

__all__ = ["NatsBroker", "NatsSubscription", "create_nats_broker"]
