"""Dead-lettered inputs: their writes, acks in offset order and log lines."""
