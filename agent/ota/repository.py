"""The model registry: a TUF repository of model versions, signed on the workstation.

``Registry`` is what ``edge-registry`` drives: publish, promote, roll back, refresh the timestamp,
rotate keys, and report status. Each model version is a target whose custom metadata is a
:class:`agent.ota.targets.ModelTarget`; a rollback is a signed instruction target. The directory
layout, the keys and the signed, versioned metadata underneath are :class:`agent.ota.tuf_repository.TufRepository`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tuf.api.metadata import Metadata, TargetFile, Targets

from agent.errors import ManifestError
from agent.manifest import load_manifest_file
from agent.ota.errors import PolicyError, RegistryError
from agent.ota.fsutil import atomic_write_bytes, fsync_dir
from agent.ota.rotation import recover, rotate
from agent.ota.targets import (
    CUSTOM_KEY,
    ModelTarget,
    RollbackInstruction,
    model_target_path,
    read_custom,
    rollback_target_path,
    to_custom,
)
from agent.ota.tuf_repository import ROLES, ROTATION_MARKER, Clock, RegistryInputError, TufRepository
from agent.ota.versions import compare_versions, parse_version

REFRESH_MARGIN = timedelta(days=2)  # refresh_timestamp re-signs targets/snapshot this close to their expiry
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class Registry(TufRepository):
    """An existing registry directory; every write is signed with the online keys in ``keys/``."""

    def __init__(self, directory: Path | str, clock: Clock = time.time) -> None:
        super().__init__(directory, clock)
        if (self.dir / ROTATION_MARKER).exists():  # a rotation cut short by a crash: finish it before anything is signed
            recover(self)

    # ----- reading --------------------------------------------------------------------------------------------

    def _entries(self, targets: Metadata[Targets]) -> Iterator[tuple[str, ModelTarget | RollbackInstruction]]:
        for path, info in targets.signed.targets.items():
            try:
                entry = read_custom(info.custom)
            except ValueError as exc:
                raise RegistryError(f"target {path} has invalid {CUSTOM_KEY!r} custom metadata: {exc}") from None
            if entry is not None:
                yield path, entry

    def models(self, model: str | None = None) -> list[ModelTarget]:
        """Every published model version (withdrawn ones too), by name then version."""
        found = [e for _, e in self._entries(self.load_role("targets")) if isinstance(e, ModelTarget)]
        found = [e for e in found if model is None or e.model == model]
        return sorted(found, key=lambda e: (e.model, parse_version(e.version)))

    def rollbacks(self) -> dict[str, RollbackInstruction]:
        """The current rollback instruction of each model that has one."""
        return {e.model: e for _, e in self._entries(self.load_role("targets")) if isinstance(e, RollbackInstruction)}

    def status(self) -> dict[str, Any]:
        """Models and their versions, rollback instructions, and each role's version and expiry."""
        targets = self.load_role("targets")
        models: dict[str, list[dict[str, Any]]] = {}
        for path, entry in self._entries(targets):
            if isinstance(entry, ModelTarget):
                info = targets.signed.targets[path]
                models.setdefault(entry.model, []).append(
                    {
                        "version": entry.version,
                        "channel": entry.channel,
                        "rollout": entry.rollout,
                        "withdrawn": entry.withdrawn,
                        "min_agent_version": entry.min_agent_version,
                        "published_at": entry.published_at,
                        "length": info.length,
                        "sha256": info.hashes.get("sha256"),
                        "path": path,
                    }
                )
        for versions in models.values():
            versions.sort(key=lambda v: parse_version(v["version"]))
        now = datetime.fromtimestamp(self.clock(), UTC)
        roles = {}
        for role in ROLES:
            signed = targets.signed if role == "targets" else self.load_role(role).signed
            roles[role] = {
                "version": signed.version,
                "expires": signed.expires.isoformat().replace("+00:00", "Z"),
                "expires_in_s": (signed.expires - now).total_seconds(),
                "expired": signed.expires <= now,
                "expiring_soon": signed.expires <= now + timedelta(days=1),
            }
        return {
            "registry": str(self.dir),
            "models": dict(sorted(models.items())),
            "rollbacks": {name: r.model_dump(mode="json") for name, r in sorted(self.rollbacks().items())},
            "roles": roles,
        }

    # ----- operations -----------------------------------------------------------------------------------------

    def publish(
        self,
        model_file: Path | str,
        manifest_file: Path | str,
        *,
        channel: str = "stable",
        rollout: float = 100,
        min_agent_version: str = "0",
        name: str | None = None,
        version: str | None = None,
    ) -> ModelTarget:
        """Add a model version: copy the file under targets/, sign its target with the manifest embedded."""
        model_file, manifest_file = Path(model_file), Path(manifest_file)
        if not model_file.is_file():
            raise RegistryInputError(f"model file {model_file} does not exist or is not a file; check the path")
        if not _FILENAME.match(model_file.name):
            raise RegistryInputError(
                f"model file name {model_file.name!r} is not usable in a URL: rename it to letters, digits, '.', '_', '-'"
            )
        try:
            manifest = load_manifest_file(manifest_file)
        except ManifestError as exc:
            raise RegistryInputError(str(exc), reason="bad_manifest") from None
        name = name or manifest.name
        version = version or manifest.version
        entry = _model_target(
            model=name, version=version, channel=channel, rollout=rollout, min_agent_version=min_agent_version, manifest={}
        )
        with self.locked():
            targets = self.load_role("targets")
            existing = [e for _, e in self._entries(targets) if isinstance(e, ModelTarget) and e.model == name]
            if existing:
                highest = max(existing, key=lambda e: parse_version(e.version))
                if compare_versions(version, highest.version) <= 0:
                    raise PolicyError(
                        f"model {name}: version {version} is not higher than the published version {highest.version}; "
                        "versions strictly increase (even after a rollback), publish it as a higher version",
                        reason="version_not_increasing",
                    )
            dest_dir = self.targets_dir / "models" / name / version
            sha256, length = _copy_hashed(model_file, dest_dir, model_file.name)
            if manifest.sha256 is not None and manifest.sha256 != sha256:
                (dest_dir / f"{sha256}.{model_file.name}").unlink(missing_ok=True)
                raise RegistryInputError(
                    f"model file {model_file} has sha256 {sha256} but manifest {manifest_file} says {manifest.sha256}; "
                    "publish the file the manifest describes, or regenerate the manifest",
                    reason="hash_mismatch",
                )
            # the device keeps the signed manifest as model.json: make it describe exactly what was published
            signed_manifest = manifest.model_copy(
                update={"sha256": sha256, "name": name, "version": version, "file": model_file.name}
            )
            entry = entry.model_copy(
                update={"manifest": signed_manifest.model_dump(mode="json", exclude_none=True), "published_at": self.clock()}
            )
            path = model_target_path(name, version, model_file.name)
            targets.signed.targets[path] = _target_file(path, length, sha256, entry)
            self.bump_and_sign(["targets"], targets=targets)
        return entry

    def promote(self, model: str, version: str, *, channel: str | None = None, rollout: float | None = None) -> ModelTarget:
        """Change a published version's channel and/or rollout percent."""
        if channel is None and rollout is None:
            raise RegistryInputError("promote needs a new channel or rollout (e.g. --channel stable or --rollout 50)")
        with self.locked():
            targets = self.load_role("targets")
            path, entry = self._find_version(targets, model, version)
            if entry.withdrawn:
                raise PolicyError(
                    f"model {model} version {entry.version} was withdrawn by a rollback; publish a new higher version instead",
                    reason="withdrawn",
                )
            updated = _model_target(
                **{
                    **entry.model_dump(),
                    **({"channel": channel} if channel is not None else {}),
                    **({"rollout": rollout} if rollout is not None else {}),
                }
            )
            info = targets.signed.targets[path]
            targets.signed.targets[path] = _target_file(path, info.length, info.hashes["sha256"], updated)
            self.bump_and_sign(["targets"], targets=targets)
        return updated

    def rollback(self, model: str, to_version: str, reason: str = "") -> RollbackInstruction:
        """Sign an instruction sending devices back to ``to_version``; withdraw every higher version."""
        with self.locked():
            targets = self.load_role("targets")
            _, target = self._find_version(targets, model, to_version)
            if target.withdrawn:
                raise PolicyError(
                    f"model {model} version {target.version} is itself withdrawn; roll back to a version that is not",
                    reason="withdrawn",
                )
            live = [e for _, e in self._entries(targets) if isinstance(e, ModelTarget) and e.model == model and not e.withdrawn]
            highest = max(live, key=lambda e: parse_version(e.version))
            if compare_versions(to_version, highest.version) >= 0:
                raise PolicyError(
                    f"model {model}: {to_version} is not lower than the highest live version {highest.version}: "
                    "nothing to roll back",
                    reason="nothing_to_roll_back",
                )
            previous = self.rollbacks().get(model)
            instruction = RollbackInstruction(
                model=model,
                to_version=target.version,
                serial=previous.serial + 1 if previous else 1,
                reason=reason,
                issued_at=self.clock(),
            )
            for path, entry in list(self._entries(targets)):
                if isinstance(entry, ModelTarget) and entry.model == model and compare_versions(entry.version, to_version) > 0:
                    info = targets.signed.targets[path]
                    withdrawn = entry.model_copy(update={"withdrawn": True})
                    targets.signed.targets[path] = _target_file(path, info.length, info.hashes["sha256"], withdrawn)
            content = (instruction.model_dump_json(indent=2) + "\n").encode()
            path = rollback_target_path(model)
            info = TargetFile.from_data(path, content, ["sha256"])
            sha256 = info.hashes["sha256"]
            dest = self.targets_dir / "rollback" / f"{sha256}.{model}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, content)
            targets.signed.targets[path] = _target_file(path, len(content), sha256, instruction)
            self.bump_and_sign(["targets"], targets=targets)
        return instruction

    def refresh_timestamp(self, expires_in_days: float | None = None, snapshot: bool = False) -> dict[str, int]:
        """Re-sign the timestamp (for cron); also snapshot when asked, and targets/snapshot when near expiry."""
        if expires_in_days is not None and not expires_in_days > 0:
            raise RegistryInputError(f"--expires-in-days {expires_in_days} must be a positive number of days")
        with self.locked():
            soon = datetime.fromtimestamp(self.clock(), UTC) + REFRESH_MARGIN
            roles = {"timestamp"}
            if snapshot or self.load_role("snapshot").signed.expires <= soon:
                roles.add("snapshot")
            if self.load_role("targets").signed.expires <= soon:
                roles.add("targets")
            return self.bump_and_sign(roles, timestamp_days=expires_in_days)

    def rotate(self, roles: Iterable[str] = (), *, root_keys: int | None = None, root_threshold: int | None = None) -> int:
        """Sign a new root (renewal, online or root key rotation): see :func:`agent.ota.rotation.rotate`."""
        return rotate(self, roles, root_keys=root_keys, root_threshold=root_threshold)

    def _find_version(self, targets: Metadata[Targets], model: str, version: str) -> tuple[str, ModelTarget]:
        try:
            wanted = parse_version(version)
        except ValueError as exc:
            raise RegistryInputError(str(exc)) from None
        known = [(p, e) for p, e in self._entries(targets) if isinstance(e, ModelTarget) and e.model == model]
        for path, entry in known:
            if parse_version(entry.version) == wanted:
                return path, entry
        have = ", ".join(e.version for _, e in sorted(known, key=lambda pe: parse_version(pe[1].version))) or "none"
        raise RegistryInputError(
            f"model {model} has no published version {version} (published: {have}); check `edge-registry status`",
            reason="unknown_version",
        )


# ----- helpers ----------------------------------------------------------------------------------------------------


def _model_target(**fields: Any) -> ModelTarget:
    try:
        return ModelTarget(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise RegistryInputError(f"invalid model target ({problems}); channel is stable|canary, rollout 0..100") from None


def _target_file(path: str, length: int, sha256: str, entry: ModelTarget | RollbackInstruction) -> TargetFile:
    # sha256 only: ngclient names consistent-snapshot targets after the first hash, and so do we on disk
    return TargetFile(length, {"sha256": sha256}, path, {"custom": to_custom(entry)})


def _copy_hashed(source: Path, dest_dir: Path, filename: str) -> tuple[str, int]:
    """Copy ``source`` to ``dest_dir/<sha256>.<filename>`` atomically, hashing the bytes actually copied."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{filename}.{os.getpid()}.tmp"
    digest, length = hashlib.sha256(), 0
    try:
        with source.open("rb") as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
                length += len(block)
            dst.flush()
            os.fsync(dst.fileno())
        sha256 = digest.hexdigest()
        os.replace(tmp, dest_dir / f"{sha256}.{filename}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest_dir)
    return sha256, length


__all__ = ["Registry"]
