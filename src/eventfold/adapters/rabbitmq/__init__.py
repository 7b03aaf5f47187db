"""RabbitMQ broker (aio-pika): topic exchange, quorum queues, publisher confirms."""

from eventfold.adapters.rabbitmq.broker import (
    RabbitMQBroker,
    RabbitMQSubscription,
    create_rabbitmq_broker,
)

__all__ = ["RabbitMQBroker", "RabbitMQSubscription", "create_rabbitmq_broker"]
