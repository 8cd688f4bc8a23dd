"""Lifecycle events: the run-events agent's fold, the writer, the runs' stored state, ownership."""
