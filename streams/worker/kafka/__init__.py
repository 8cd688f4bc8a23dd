"""Kafka plumbing beside Faust: group consumers, topics, offsets, records, the runs table."""
