"""Root renewal and key rotation for the model registry (``edge-registry rotate``).

A new root version is signed by the current root keys, which devices trust, and by the new ones, so
that it stands on its own for the next rotation; devices walk the root chain from the root they were
installed with. Online roles whose keys change are re-signed at once. Crash safety: a marker file is
written first, new keys go to ``*.pem.next`` files, the new root is written, then the keys are moved
into place and the roles re-signed; :func:`recover` (run when a registry with the marker is opened)
finishes whatever a crash left undone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root
from tuf.api.serialization.json import JSONSerializer

from agent.ota.errors import RegistryError
from agent.ota.fsutil import atomic_write_bytes, fsync_dir
from agent.ota.tuf_repository import (
    ONLINE_ROLES,
    ROTATION_MARKER,
    RegistryInputError,
    TufRepository,
    expiry,
    write_private_key,
)


def rotate(
    registry: TufRepository, roles: Iterable[str] = (), *, root_keys: int | None = None, root_threshold: int | None = None
) -> int:
    """Sign a new root: fresh keys for the online ``roles``, new root keys when ``root_keys`` is given, and a
    fresh root expiry in every case (with nothing to rotate this just renews root). Returns the root version.

    The new root is signed by the current root keys (so devices, which trust the old root, accept it) and by
    the new ones (so it is valid on its own). Devices walk the root chain from the root they were installed
    with; a key that is rotated out can sign nothing they accept afterwards. New key files are written as
    ``*.next`` first and moved into place only after the root that lists them is written; opening the registry
    finishes a rotation a crash cut short (:func:`recover`).
    """
    roles = sorted(set(roles))
    bad = [r for r in roles if r not in ONLINE_ROLES]
    if bad:
        raise RegistryInputError(f"cannot rotate {bad}: online roles are {list(ONLINE_ROLES)}; root keys: --root-keys N")
    if root_keys is None and root_threshold is not None:
        raise RegistryInputError("--threshold needs --root-keys (the threshold of the new root keys)")
    threshold = root_threshold or 1
    if root_keys is not None and not 1 <= threshold <= root_keys:
        raise RegistryInputError(
            f"root threshold {threshold} does not fit {root_keys} root key(s): use 1 <= threshold <= root keys"
        )
    with registry.locked():
        current = registry.load_role("root")
        old_signers = registry.signers("root")
        root_md = Metadata.from_bytes(current.to_bytes())
        root = root_md.signed
        root.version += 1
        root.expires = expiry(registry.clock(), registry.expires_days["root"])
        online = {role: CryptoSigner.generate_ed25519() for role in roles}
        for role, signer in online.items():
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(signer.public_key, role)
        new_root_signers = [CryptoSigner.generate_ed25519() for _ in range(root_keys or 0)]
        if new_root_signers:
            for keyid in list(root.roles["root"].keyids):
                root.revoke_key(keyid, "root")
            for signer in new_root_signers:
                root.add_key(signer.public_key, "root")
            root.roles["root"].threshold = threshold
        for signer in old_signers + new_root_signers:
            root_md.sign(signer, append=True)
        try:  # the old root must accept it (devices), and it must stand on its own (the next rotation)
            current.signed.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
            root.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
        except UnsignedMetadataError as exc:
            raise RegistryError(f"the new root would not verify ({exc}); nothing was changed") from None

        staged = {registry.key_path(role).with_suffix(".pem.next"): signer for role, signer in online.items()}
        root_dir = registry.dir / "root-keys"
        staged |= {root_dir / f"root-v{root.version}-{i}.pem.next": s for i, s in enumerate(new_root_signers, start=1)}
        marker = registry.dir / ROTATION_MARKER
        atomic_write_bytes(marker, f"{root.version}\n".encode())  # until the end: open() finishes the job
        for path, signer in staged.items():
            write_private_key(path, signer)
        atomic_write_bytes(registry.metadata_path("root", root.version), root_md.to_bytes(JSONSerializer(compact=False)))
        if new_root_signers:  # the old root keys now sign nothing a device accepts: keep them apart, not in use
            _retire_root_keys(root, root_dir, current.signed.version)
        for path in staged:
            path.rename(path.with_suffix(""))
        fsync_dir(registry.dir / "keys")
        fsync_dir(root_dir)
        _sync_root_settings(registry, root)
        registry.forget_signers()
        if online:
            # the roles whose keys changed are re-signed now: what devices hold was signed with retired keys
            registry.bump_and_sign(list(online))
        marker.unlink()
        fsync_dir(registry.dir)
    return root.version

def recover(registry: TufRepository) -> None:
    """Finish a rotation that a crash cut short (its marker file is still there), so the registry signs
    with the keys its newest root lists.

    ``*.pem.next`` keys listed by the newest root are moved into place (and root keys that root no longer
    lists are retired); others belong to a root that was never written and are dropped. Online roles whose
    current metadata the newest root does not accept are then re-signed.
    """
    marker = registry.dir / ROTATION_MARKER
    root = registry.load_role("root").signed
    root_dir = registry.dir / "root-keys"
    leftovers = sorted([*(registry.dir / "keys").glob("*.pem.next"), *root_dir.glob("*.pem.next")])
    for path in leftovers:
        try:
            keyid = CryptoSigner(load_pem_private_key(path.read_bytes(), None)).public_key.keyid
        except (OSError, ValueError, TypeError):
            keyid = ""
        if keyid in root.keys:
            if path.parent == root_dir:
                _retire_root_keys(root, root_dir, root.version - 1)
            path.rename(path.with_suffix(""))
        else:
            path.unlink()
    stale = []
    for role in ONLINE_ROLES:
        md = registry.load_role(role)
        try:
            root.verify_delegate(role, md.signed_bytes, md.signatures)
        except UnsignedMetadataError:
            stale.append(role)
    if stale:
        with registry.locked():
            registry.bump_and_sign(stale)
    _sync_root_settings(registry, root)
    marker.unlink()

def _sync_root_settings(registry: TufRepository, root: Root) -> None:
    """Keep ``registry.json``'s root key count and threshold in step with the newest root."""
    keys, threshold = len(root.roles["root"].keyids), root.roles["root"].threshold
    if (registry.settings.get("root_keys"), registry.settings.get("root_threshold")) != (keys, threshold):
        registry.write_settings(root_keys=keys, root_threshold=threshold)

def _retire_root_keys(root: Root, root_dir: Path, old_version: int) -> None:
    """Move root key files the given root does not list to ``root-keys/retired/`` (they sign nothing valid now)."""
    retired = root_dir / "retired"
    for path in root_dir.glob("*.pem"):
        keyid = CryptoSigner(load_pem_private_key(path.read_bytes(), None)).public_key.keyid
        if keyid not in root.roles["root"].keyids:
            retired.mkdir(mode=0o700, exist_ok=True)
            path.rename(retired / f"v{old_version}-{path.name}")
