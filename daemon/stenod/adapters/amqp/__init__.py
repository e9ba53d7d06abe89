"""Everything that speaks to RabbitMQ: the request consumer, its acks, the topology, and
the outbox relay (a child process)."""
