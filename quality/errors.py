"""The one root error of the quality package."""

from __future__ import annotations


class QualityError(Exception):
    """A rule catalogue, a rule or the quality engine's setup is wrong; the message says what to fix."""
