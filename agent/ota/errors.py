"""Why an update did not happen: one error type per cause, each with a stable reason code.

The reason code is what the device reports over MQTT (``update.reason``) and what
``edge-fleet`` counts; the message is for a human and names the file, URL or value.
"""

from __future__ import annotations

from agent.errors import AgentError


class OtaError(AgentError):
    """Base of every update failure. ``reason`` is a short stable code (snake_case)."""

    reason = "update_failed"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class RegistryError(OtaError):
    """The registry's metadata could not be fetched or did not verify (TUF)."""

    reason = "metadata_rejected"


class ClockError(OtaError):
    """The system clock is not plausible (a Pi has no RTC): metadata expiry cannot be judged."""

    reason = "clock_implausible"


class DownloadError(OtaError):
    """The artifact could not be downloaded, or its bytes do not match the signed length and hashes."""

    reason = "download_failed"


class ResourceError(OtaError):
    """Not enough disk or memory to take the update safely."""

    reason = "insufficient_resources"


class PolicyError(OtaError):
    """The update is not allowed: a downgrade without a signed rollback instruction, an agent too old, ..."""

    reason = "refused"


class SelfTestError(OtaError):
    """The candidate model failed validation or its self-test; the old model keeps serving."""

    reason = "selftest_failed"


class TrialError(OtaError):
    """The new model misbehaved during its trial window; the previous model is back."""

    reason = "trial_failed"


class StoreError(OtaError):
    """The on-device model store or journal cannot be written or read."""

    reason = "store_error"
