"""Carrying out what the saga asks: a run's steps, the reconciler, the candidate trainer."""
