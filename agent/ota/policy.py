"""What the registry offers this device: the pure selection rules (no I/O; tested on their own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import __version__
from agent.ota.targets import ModelTarget, RollbackInstruction, accepts_channel
from agent.ota.versions import compare_versions, in_rollout, rollout_bucket

if TYPE_CHECKING:
    from tuf.api.metadata import TargetFile


@dataclass
class Offer:
    target: ModelTarget
    path: str  # the TUF target path
    info: TargetFile
    rollback: RollbackInstruction | None = None  # set when a signed instruction allows this downgrade


def choose(
    entries: list[tuple[str, ModelTarget | RollbackInstruction]],
    *,
    model: str,
    device_id: str,
    channel: str,
    running_version: str,
    floor_version: str | None,
    failed: set[str],
    rollback_serial_applied: int,
    agent_version: str = __version__,
) -> tuple[tuple[str, ModelTarget] | None, RollbackInstruction | None, str, str | None]:
    """Pure selection: which target (if any) this device should install, and why (no I/O; tested alone).

    Returns (path and target or None, the rollback instruction that allows it or None, detail, reason).
    """
    versions = [(p, t) for p, t in entries if isinstance(t, ModelTarget) and t.model == model]
    instructions = [t for _, t in entries if isinstance(t, RollbackInstruction) and t.model == model]
    rollback = max(instructions, key=lambda r: r.serial, default=None)
    if (
        rollback is not None
        and rollback.serial > rollback_serial_applied
        and compare_versions(running_version, rollback.to_version) > 0
    ):
        match = [(p, t) for p, t in versions if compare_versions(t.version, rollback.to_version) == 0]
        if match:
            return match[0], rollback, f"signed rollback #{rollback.serial} to {rollback.to_version}", None
        return (
            None,
            None,
            f"rollback #{rollback.serial} names {rollback.to_version}, which the registry does not list",
            "rollback_target_missing",
        )

    skipped: list[str] = []
    eligible: list[tuple[str, ModelTarget]] = []
    for p, t in versions:
        key = f"{t.model}@{t.version}"
        if t.withdrawn:
            continue
        if not accepts_channel(channel, t.channel):
            continue
        if not in_rollout(device_id, model, t.rollout):
            skipped.append(
                f"{t.version} is rolled out to {t.rollout:g}% (this device's bucket is {rollout_bucket(device_id, model)})"
            )
            continue
        if compare_versions(agent_version, t.min_agent_version) < 0:
            skipped.append(f"{t.version} needs agent {t.min_agent_version} (this is {agent_version})")
            continue
        if key in failed:
            skipped.append(f"{t.version} failed here before")
            continue
        eligible.append((p, t))
    best = max(eligible, key=lambda pt: tuple(int(x) for x in pt[1].version.split(".")), default=None)
    floor = running_version
    if floor_version is not None and compare_versions(floor_version, floor) > 0:
        floor = floor_version
    if best is not None and compare_versions(best[1].version, floor) > 0:
        return best, None, f"{best[1].version} is newer than {running_version}", None
    if best is not None and compare_versions(best[1].version, running_version) < 0:
        return (
            None,
            None,
            f"the registry offers {best[1].version}, lower than the running {running_version}: "
            "downgrade refused (no signed rollback instruction)",
            "downgrade_refused",
        )
    reason = None
    if any("rolled out" in s for s in skipped):
        reason = "not_in_rollout"
    elif any("failed here before" in s for s in skipped):
        reason = "failed_before"
    detail = f"up to date ({running_version})" + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
    return None, None, detail, reason
