"""The model registry: a TUF repository of model versions, signed on the workstation.

``Registry`` owns a directory made by ``Registry.init`` (layout in the README and /tmp/ota-spec.md):
``repository/`` is the static tree devices fetch (metadata/ and targets/, nothing secret),
``keys/`` holds the online keys (targets, snapshot, timestamp) and ``root-keys/`` the root keys,
which only ``init`` needs and which belong offline afterwards.

Every change writes new versioned metadata in the order targets -> snapshot -> timestamp, each
file atomically; the timestamp is the switch, so a crash part-way leaves the old state served.
Old versioned files stay: a device mid-update may still fetch them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import ValidationError
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Signed, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from agent.errors import ManifestError
from agent.manifest import load_manifest_file
from agent.ota.errors import PolicyError, RegistryError
from agent.ota.fsutil import atomic_write_bytes, fsync_dir
from agent.ota.targets import (
    CUSTOM_KEY,
    ModelTarget,
    RollbackInstruction,
    model_target_path,
    read_custom,
    rollback_target_path,
    to_custom,
)
from agent.ota.versions import compare_versions, parse_version

Clock = Callable[[], float]
ONLINE_ROLES: tuple[str, ...] = ("targets", "snapshot", "timestamp")
ROLES: tuple[str, ...] = ("root", *ONLINE_ROLES)
DEFAULT_EXPIRES_DAYS: dict[str, int] = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
REFRESH_MARGIN = timedelta(days=2)  # refresh_timestamp re-signs targets/snapshot this close to their expiry
SETTINGS_FILE = "registry.json"
ROTATION_MARKER = "rotation-in-progress"  # present from before the new keys are written until rotate() is done
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_DAY = 86400.0


class RegistryInputError(RegistryError):
    """What the caller gave (registry dir, model file, manifest, version, option) is wrong; the message says what to fix."""

    reason = "bad_input"


class Registry:
    """An existing registry directory; every write is signed with the online keys in ``keys/``."""

    def __init__(self, directory: Path | str, clock: Clock = time.time) -> None:
        self.dir = Path(directory)
        self.clock = clock
        settings_path = self.dir / SETTINGS_FILE
        if not settings_path.is_file() or not (self.metadata_dir / "1.root.json").is_file():
            raise RegistryInputError(
                f"{self.dir} is not a model registry (no {SETTINGS_FILE} or repository/metadata/1.root.json); "
                "create one with `edge-registry init DIR` or point --registry / EDGE_REGISTRY_DIR at it",
                reason="not_a_registry",
            )
        try:
            self.settings: dict[str, Any] = json.loads(settings_path.read_text())
            self.expires_days: dict[str, float] = {**DEFAULT_EXPIRES_DAYS, **self.settings.get("expires_days", {})}
        except (OSError, ValueError, TypeError) as exc:
            raise RegistryError(f"cannot read {settings_path}: {exc}; restore it from a backup") from None
        missing = [str(self.key_path(role)) for role in ONLINE_ROLES if not self.key_path(role).is_file()]
        if missing:
            raise RegistryError(
                f"registry {self.dir} is missing online signing keys: {', '.join(missing)}; restore keys/ from your backup"
            )
        self._signers: dict[str, list[CryptoSigner]] = {}
        if (self.dir / ROTATION_MARKER).exists():
            from agent.ota.rotation import recover

            recover(self)

    # ----- creating -------------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path | str,
        *,
        root_keys: int = 1,
        root_threshold: int = 1,
        expires_days: Mapping[str, float] | None = None,
        clock: Clock = time.time,
    ) -> Registry:
        """Create a registry: fresh ed25519 keys, ``1.root.json`` and empty targets/snapshot/timestamp."""
        directory = Path(directory)
        days = {**DEFAULT_EXPIRES_DAYS, **(expires_days or {})}
        for role, value in days.items():
            if role not in ROLES or not value > 0:
                raise RegistryInputError(f"expiry for role {role!r} is {value!r}: use a role of {ROLES} and days > 0")
        if not 1 <= root_threshold <= root_keys:
            raise RegistryInputError(
                f"root threshold {root_threshold} does not fit {root_keys} root key(s): use 1 <= threshold <= root keys"
            )
        existing = [name for name in (SETTINGS_FILE, "repository", "keys", "root-keys") if (directory / name).exists()]
        if existing:
            raise RegistryInputError(
                f"{directory} already holds a registry ({', '.join(existing)} exist); refusing to overwrite its keys. "
                "Use another directory, or delete this one if you really mean to start over",
                reason="registry_exists",
            )
        for sub in ("repository/metadata", "repository/targets"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("keys", "root-keys"):
            (directory / sub).mkdir(mode=0o700)

        root_signers = [CryptoSigner.generate_ed25519() for _ in range(root_keys)]
        online = {role: CryptoSigner.generate_ed25519() for role in ONLINE_ROLES}
        for i, signer in enumerate(root_signers, start=1):
            write_private_key(directory / "root-keys" / f"root-{i}.pem", signer)
        for role, signer in online.items():
            write_private_key(directory / "keys" / f"{role}.pem", signer)

        now = clock()
        settings: dict[str, Any] = {"format": 1, "created_at": now, "root_threshold": root_threshold, "root_keys": root_keys}
        settings["expires_days"] = days
        atomic_write_bytes(directory / SETTINGS_FILE, (json.dumps(settings, indent=2) + "\n").encode())

        root = Root(expires=expiry(now, days["root"]), consistent_snapshot=True)
        for signer in root_signers:
            root.add_key(signer.public_key, "root")
        root.roles["root"].threshold = root_threshold
        for role, signer in online.items():
            root.add_key(signer.public_key, role)
        registry = cls.__new__(cls)  # keys are known here; skip the open-time checks until the files exist
        registry.dir, registry.clock, registry.settings, registry.expires_days = directory, clock, settings, days
        registry._signers = {"root": root_signers, **{role: [s] for role, s in online.items()}}
        registry.sign_and_write(Metadata(root), "root")
        registry.sign_and_write(Metadata(Targets(expires=expiry(now, days["targets"]))), "targets")
        registry.sign_and_write(Metadata(Snapshot(expires=expiry(now, days["snapshot"]))), "snapshot")
        registry.sign_and_write(Metadata(Timestamp(expires=expiry(now, days["timestamp"]))), "timestamp")
        return cls(directory, clock=clock)

    # ----- paths ----------------------------------------------------------------------------------------------

    @property
    def repository_dir(self) -> Path:
        """The static tree to serve."""
        return self.dir / "repository"

    @property
    def metadata_dir(self) -> Path:
        return self.repository_dir / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.repository_dir / "targets"

    @property
    def trusted_root_path(self) -> Path:
        """The root a device is installed with."""
        return self.metadata_dir / "1.root.json"

    def key_path(self, role: str) -> Path:
        """The private key file of an online role."""
        return self.dir / "keys" / f"{role}.pem"

    def metadata_path(self, role: str, version: int) -> Path:
        """Where ``version`` of ``role`` lives (consistent snapshots: versioned names except the timestamp)."""
        return self.metadata_dir / ("timestamp.json" if role == "timestamp" else f"{version}.{role}.json")

    # ----- low-level metadata (also what tests use to forge attacks with real keys) ---------------------------

    def load_role(self, role: str) -> Metadata[Any]:
        """The metadata of ``role`` that devices currently see (root: the newest; others: via timestamp -> snapshot)."""
        if role == "root":
            numbers = [p.name.split(".")[0] for p in self.metadata_dir.glob("*.root.json")]
            path = self.metadata_path("root", max(int(n) for n in numbers if n.isdigit()))
        elif role == "timestamp":
            path = self.metadata_path("timestamp", 0)
        elif role == "snapshot":
            path = self.metadata_path("snapshot", self.load_role("timestamp").signed.snapshot_meta.version)
        elif role == "targets":
            path = self.metadata_path("targets", self.load_role("snapshot").signed.meta["targets.json"].version)
        else:
            raise ValueError(f"unknown role {role!r}; use one of {ROLES}")
        try:
            return Metadata.from_file(str(path))
        except (OSError, DeserializationError) as exc:
            raise RegistryError(f"cannot read {role} metadata {path}: {exc}; the registry is damaged, restore it") from None

    def signers(self, role: str) -> list[CryptoSigner]:
        """The private keys of ``role`` (root keys only while ``root-keys/`` is present)."""
        if role not in self._signers:
            paths = sorted((self.dir / "root-keys").glob("*.pem")) if role == "root" else [self.key_path(role)]
            if not paths:
                raise RegistryError(f"no root keys in {self.dir / 'root-keys'}: bring the offline root keys back to sign root")
            signers = []
            for path in paths:
                try:
                    private = load_pem_private_key(path.read_bytes(), None)
                    signers.append(CryptoSigner(private))
                except (OSError, ValueError, TypeError) as exc:
                    raise RegistryError(f"cannot load signing key {path}: {exc}; restore it from your backup") from None
            self._signers[role] = signers
        return self._signers[role]

    def sign_and_write(self, md: Metadata[Any], role: str) -> Path:
        """Replace ``md``'s signatures with ``role``'s keys, check the threshold, write it atomically; returns the path.

        Does not bump versions or expiry: that is ``bump_and_sign``. Writing over an existing versioned file
        is allowed here (tests forge bad metadata this way); the registry's own operations never do it.
        """
        if md.signed.type != role:
            raise ValueError(f"metadata of type {md.signed.type!r} cannot be written as {role!r}")
        md.signatures.clear()
        for signer in self.signers(role):
            md.sign(signer, append=True)
        delegator = md.signed if role == "root" else self.load_role("root").signed
        try:
            delegator.verify_delegate(role, md.signed_bytes, md.signatures)
        except UnsignedMetadataError as exc:
            raise RegistryError(f"the keys in {self.dir} do not satisfy the {role} role of root: {exc}") from None
        path = self.metadata_path(role, md.signed.version)
        atomic_write_bytes(path, md.to_bytes(JSONSerializer(compact=False)))
        return path

    def bump_and_sign(
        self, roles: Iterable[str], *, targets: Metadata[Targets] | None = None, timestamp_days: float | None = None
    ) -> dict[str, int]:
        """Publish a new version of ``roles`` with fresh expiry, and of every role that references them.

        A new targets means a new snapshot, and a new snapshot a new timestamp (TUF). ``targets`` is the
        changed targets metadata (default: the current one). Returns the versions written.
        """
        wanted = set(roles) | ({"targets"} if targets is not None else set())
        unknown = wanted - set(ONLINE_ROLES)
        if unknown:
            raise ValueError(f"cannot bump {sorted(unknown)}: only {ONLINE_ROLES} are online roles")
        if "targets" in wanted:
            wanted.add("snapshot")
        if "snapshot" in wanted:
            wanted.add("timestamp")
        now = self.clock()
        written: dict[str, int] = {}
        snapshot = self.load_role("snapshot")
        timestamp = self.load_role("timestamp")
        if "targets" in wanted:
            md = targets if targets is not None else self.load_role("targets")
            md.signed.version = snapshot.signed.meta["targets.json"].version + 1
            self._stamp(md.signed, now, self.expires_days["targets"])
            self.sign_and_write(md, "targets")
            snapshot.signed.meta["targets.json"] = MetaFile(version=md.signed.version)
            written["targets"] = md.signed.version
        if "snapshot" in wanted:
            snapshot.signed.version = timestamp.signed.snapshot_meta.version + 1
            self._stamp(snapshot.signed, now, self.expires_days["snapshot"])
            self.sign_and_write(snapshot, "snapshot")
            timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
            written["snapshot"] = snapshot.signed.version
        timestamp.signed.version += 1
        self._stamp(timestamp.signed, now, timestamp_days or self.expires_days["timestamp"])
        self.sign_and_write(timestamp, "timestamp")
        written["timestamp"] = timestamp.signed.version
        return written

    @staticmethod
    def _stamp(signed: Signed, now: float, days: float) -> None:
        signed.expires = expiry(now, days)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize writers (a cron refresh and a publish must not interleave their version bumps)."""
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
        from agent.ota.rotation import rotate

        return rotate(self, roles, root_keys=root_keys, root_threshold=root_threshold)

    def forget_signers(self) -> None:
        """Drop the loaded keys: the next signature loads them from disk again (after a rotation)."""
        self._signers.clear()

    def write_settings(self, **changes: Any) -> None:
        self.settings.update(changes)
        atomic_write_bytes(self.dir / SETTINGS_FILE, (json.dumps(self.settings, indent=2) + "\n").encode())

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


def expiry(now: float, days: float) -> datetime:
    return datetime.fromtimestamp(now + days * _DAY, UTC)


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


def write_private_key(path: Path, signer: CryptoSigner) -> None:
    """A new private key file, mode 0600, durable before this returns (refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(signer.private_bytes)
        fh.flush()
        os.fsync(fh.fileno())


__all__ = ["DEFAULT_EXPIRES_DAYS", "ONLINE_ROLES", "ROLES", "Registry", "RegistryInputError"]
