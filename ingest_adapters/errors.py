"""One root error for the package; each says what went wrong and what to do."""

from __future__ import annotations


class IngestError(Exception):
    """Root of every error raised by ingest_adapters."""


class RegistryError(IngestError):
    """The feed registry is malformed or refers to something that does not exist."""


class UnknownReaderError(IngestError):
    """No reader is registered for a format."""


class UnreadableFileError(IngestError):
    """A whole file cannot be read: its batch fails, other files still load."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path
