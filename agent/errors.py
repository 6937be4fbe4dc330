"""Errors a user can meet, as a hierarchy callers can catch by meaning.

Every message names the offending file, field or value and says what to do about it.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration file or an environment override is invalid.

    ``problems`` holds one ``(field_path, message)`` pair per error, so a CLI can list them all.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ModelError(AgentError):
    """A model file or its manifest cannot be used."""


class ModelFileError(ModelError):
    """The model file is missing, truncated, corrupt or of an unknown format."""


class ManifestError(ModelError):
    """The manifest is missing, malformed, or does not describe the model it sits beside."""


class DecoderError(ModelError):
    """The model's outputs do not fit the configured (or detected) decoder."""


class BackendUnavailableError(AgentError):
    """An inference runtime is not installed; the message names the package to install."""


class SourceError(AgentError):
    """A frame source cannot be opened or configured (bad path, no camera, bad URL)."""


class SourceEnded(AgentError):
    """A finite source (file, folder) has no more frames. Not an error for the pipeline."""
