"""A TUF repository on disk, signed with keys kept beside it: the machinery under the model registry.

``TufRepository`` owns a directory made by ``TufRepository.init`` (layout in the README):
``repository/`` is the static tree devices fetch (metadata/ and targets/, nothing secret),
``keys/`` holds the online keys (targets, snapshot, timestamp) and ``root-keys/`` the root keys,
which only ``init`` needs and which belong offline afterwards. It knows nothing about models; that is
:class:`agent.ota.repository.Registry`.

Every change writes new versioned metadata in the order targets -> snapshot -> timestamp, each
file atomically; the timestamp is the switch, so a crash part-way leaves the old state served.
Old versioned files stay: a device mid-update may still fetch them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Signed, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from agent.ota.errors import RegistryError
from agent.ota.fsutil import atomic_write_bytes

Clock = Callable[[], float]
ONLINE_ROLES: tuple[str, ...] = ("targets", "snapshot", "timestamp")
ROLES: tuple[str, ...] = ("root", *ONLINE_ROLES)
DEFAULT_EXPIRES_DAYS: dict[str, int] = {"root": 365, "targets": 90, "snapshot": 7, "timestamp": 1}
SETTINGS_FILE = "registry.json"
ROTATION_MARKER = "rotation-in-progress"  # present from before the new keys are written until rotate() is done
_DAY = 86400.0


class RegistryInputError(RegistryError):
    """What the caller gave (registry dir, model file, manifest, version, option) is wrong; the message says what to fix."""

    reason = "bad_input"


class TufRepository:
    """An existing repository directory; every write is signed with the online keys in ``keys/``."""

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
    ) -> Self:
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

    def forget_signers(self) -> None:
        """Drop the loaded keys: the next signature loads them from disk again (after a rotation)."""
        self._signers.clear()

    def write_settings(self, **changes: Any) -> None:
        self.settings.update(changes)
        atomic_write_bytes(self.dir / SETTINGS_FILE, (json.dumps(self.settings, indent=2) + "\n").encode())


# ----- helpers ----------------------------------------------------------------------------------------------------


def expiry(now: float, days: float) -> datetime:
    return datetime.fromtimestamp(now + days * _DAY, UTC)


def write_private_key(path: Path, signer: CryptoSigner) -> None:
    """A new private key file, mode 0600, durable before this returns (refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(signer.private_bytes)
        fh.flush()
        os.fsync(fh.fileno())


__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "ONLINE_ROLES",
    "ROLES",
    "ROTATION_MARKER",
    "Clock",
    "RegistryInputError",
    "TufRepository",
    "expiry",
    "write_private_key",
]
