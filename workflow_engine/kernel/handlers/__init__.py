"""One handler per command. Each takes ``(command, runtime, idempotency)`` and returns a result."""
