"""The local HTTP API: health, Prometheus metrics, status, on-demand detection, snapshots (FastAPI + uvicorn)."""

from __future__ import annotations

from agent.http.server import ApiServer

__all__ = ["ApiServer"]
