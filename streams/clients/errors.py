"""Failures the shared clients raise that the CLI and the dashboard each report their own way."""


class TopicMissing(LookupError):
    """A topic the command reads does not exist (no worker has created it yet)."""
