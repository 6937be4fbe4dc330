"""edge-agent: on-device camera inference for the Raspberry Pi.

The public face: what a user, a converter or a test imports. Everything else may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AgentConfig",
    "Detection",
    "DetectionResult",
    "Detector",
    "ModelManifest",
    "Pipeline",
    "__version__",
    "load_config",
    "load_detector",
]

# Lazy: `import agent` stays cheap (the CLI imports runtimes only for commands that need them).
_EXPORTS = {
    "AgentConfig": "agent.config",
    "load_config": "agent.config",
    "Detection": "agent.schema",
    "DetectionResult": "agent.schema",
    "ModelManifest": "agent.manifest",
    "Detector": "agent.detector",
    "load_detector": "agent.detector",
    "Pipeline": "agent.pipeline",
}

if TYPE_CHECKING:
    from agent.config import AgentConfig, load_config
    from agent.detector import Detector, load_detector
    from agent.manifest import ModelManifest
    from agent.pipeline import Pipeline
    from agent.schema import Detection, DetectionResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
