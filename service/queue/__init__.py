"""Job queues: one protocol, an in-process backend and a Redis Streams backend."""
