"""The processor service: Redis Streams consumer group -> one PostgreSQL transaction per batch."""
