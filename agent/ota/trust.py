"""The registry's trust layer on the device: python-tuf's ngclient, its errors mapped to our reason codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.ota.errors import RegistryError
from agent.ota.targets import ModelTarget, RollbackInstruction, read_custom

if TYPE_CHECKING:
    from tuf.ngclient import Updater

    from agent.config import UpdateConfig

log = logging.getLogger("agent.ota")


def open_updater(cfg: UpdateConfig, tuf_dir: Path) -> Updater:
    from tuf.ngclient import Updater, UpdaterConfig

    assert cfg.url is not None and cfg.trusted_root is not None
    try:
        bootstrap = Path(cfg.trusted_root).read_bytes()
    except OSError as exc:
        raise RegistryError(
            f"update.trusted_root: cannot read {cfg.trusted_root}: {exc.strerror}; install the registry's 1.root.json there",
            reason="trusted_root_missing",
        ) from None
    tuf_dir.mkdir(parents=True, exist_ok=True)
    base = cfg.url.rstrip("/")
    config = UpdaterConfig(app_user_agent=f"edge-agent/{__version__}")
    try:
        return Updater(str(tuf_dir), f"{base}/metadata/", target_base_url=f"{base}/targets/", bootstrap=bootstrap, config=config)
    except Exception as exc:  # noqa: BLE001 - ngclient raises several types for a bad root
        raise RegistryError(
            f"update.trusted_root: {cfg.trusted_root} is not valid root metadata: {exc}", "trusted_root_invalid"
        ) from None


def refresh(tuf: Updater, base: str | None) -> None:
    from tuf.api import exceptions as tx

    try:
        tuf.refresh()
    except tx.ExpiredMetadataError as exc:
        raise RegistryError(
            f"registry {base}: {exc} (the registry must run refresh-timestamp; or this clock is wrong)", "metadata_expired"
        ) from None
    except tx.BadVersionNumberError as exc:
        raise RegistryError(
            f"registry {base}: {exc}: metadata older than what this device has seen (rollback attack?)", "metadata_rollback"
        ) from None
    except tx.UnsignedMetadataError as exc:
        raise RegistryError(f"registry {base}: {exc}: signature check failed", "bad_signature") from None
    except tx.LengthOrHashMismatchError as exc:
        raise RegistryError(
            f"registry {base}: {exc}: metadata does not match what the snapshot/timestamp signed (mix-and-match?)",
            "metadata_mismatch",
        ) from None
    except tx.DownloadLengthMismatchError as exc:
        raise RegistryError(f"registry {base}: {exc}: metadata larger than allowed", "oversized") from None
    except tx.DownloadError as exc:
        raise RegistryError(f"registry {base} unreachable: {exc}", "registry_unreachable") from None
    except tx.RepositoryError as exc:
        raise RegistryError(f"registry {base}: metadata rejected: {type(exc).__name__}: {exc}", "metadata_rejected") from None


def signed_entries(tuf_dir: Path) -> list[tuple[str, ModelTarget | RollbackInstruction]]:
    """Our entries in the top-level targets metadata that ``refresh`` just verified and persisted."""
    from tuf.api.metadata import Metadata, Targets

    targets: Metadata[Targets] = Metadata.from_file(str(tuf_dir / "targets.json"))
    entries: list[tuple[str, ModelTarget | RollbackInstruction]] = []
    for path, tf in targets.signed.targets.items():
        try:
            custom = read_custom(tf.custom)
        except ValueError as exc:
            log.warning("registry target %s has unusable edge metadata, skipped: %s", path, exc)
            continue
        if custom is not None:
            entries.append((path, custom))
    return entries


def consistent_snapshot(tuf_dir: Path) -> bool:
    """Whether target files are served under hash-prefixed names (the trusted root says)."""
    from tuf.api.metadata import Metadata

    return bool(Metadata.from_file(str(tuf_dir / "root.json")).signed.consistent_snapshot)
