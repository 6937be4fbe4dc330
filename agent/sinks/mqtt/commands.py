"""Remote commands: bytes in, exactly one :class:`CommandResult` out, whatever the bytes were.

The handler is a pure core (no MQTT, no threads): it parses and validates the request with
pydantic, checks the optional HMAC, dispatches to :class:`Controls` (the running agent,
implemented in ``controls.py``) and answers through ``reply``. Unknown commands, malformed
JSON, wrong types, bad signatures and failing actions all become an error result; nothing
raises out of :meth:`CommandHandler.handle`.

Signed commands (``commands.hmac_key_file``): ``hmac`` is the hex HMAC-SHA256, under the shared
key, of the canonical JSON ``{"args":..., "command": <name>, "id":..., "ts":...}`` (keys sorted,
no whitespace, ASCII): see :func:`canonical_request` and :func:`sign_request`. ``ts`` must be
within ``hmac_max_skew_s`` of the device clock and an ``id`` is accepted once within that window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.errors import ConfigError
from agent.manifest import Thresholds
from agent.sinks.mqtt.config import PublishPolicy
from agent.sinks.mqtt.payloads import CommandError, CommandRequest, CommandResult, ErrorCode

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SetThresholdArgs(_Args):
    score: float | None = Field(None, ge=0.0, le=1.0, description="Minimum detection score.")
    iou: float | None = Field(None, ge=0.0, le=1.0, description="NMS IoU threshold.")
    max_detections: int | None = Field(None, ge=1, le=10_000, description="Most detections per frame.")

    @model_validator(mode="after")
    def _something(self) -> SetThresholdArgs:
        if self.score is None and self.iou is None and self.max_detections is None:
            raise ValueError("give at least one of score, iou, max_detections")
        return self


class SetPublishPolicyArgs(_Args):
    policy: PublishPolicy = Field(description="every_frame, with_detections or on_change.")


class SnapshotArgs(_Args):
    publish: bool = Field(True, description="Publish the JPEG on <prefix>/snapshot.")
    save: bool = Field(False, description="Save the JPEG in the snapshot directory.")
    annotate: bool = Field(True, description="Draw the detections on the image.")
    quality: int | None = Field(None, ge=10, le=100, description="JPEG quality (default: commands.snapshot_jpeg_quality).")


class NoArgs(_Args):
    pass


COMMAND_ARGS: dict[str, type[_Args]] = {
    "set_threshold": SetThresholdArgs,
    "set_publish_policy": SetPublishPolicyArgs,
    "snapshot": SnapshotArgs,
    "reload_config": NoArgs,
    "check_update": NoArgs,
}


class CommandFailed(Exception):
    """An action could not be carried out; ``code`` and ``field`` go into the result."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.field = field


Outcome = dict[str, Any]
Done = Callable[[Outcome | CommandFailed], None]


class Controls(Protocol):
    """What commands act on: the running agent (see ``controls.py``)."""

    def set_thresholds(self, args: SetThresholdArgs) -> Outcome: ...

    def set_publish_policy(self, policy: str) -> Outcome: ...

    def snapshot(self, args: SnapshotArgs, done: Done) -> None: ...

    def reload_config(self) -> Outcome: ...

    def check_update(self) -> Outcome: ...


@dataclass(frozen=True)
class ReplyTo:
    """Where an MQTT 5 request asked for its answer."""

    topic: str | None
    correlation: bytes | None


Reply = Callable[[str, CommandResult, ReplyTo | None], None]


def canonical_request(name: str, request: CommandRequest | dict[str, Any]) -> bytes:
    """The bytes an HMAC covers: command name, id, ts and args, as sorted compact ASCII JSON."""
    data = request.model_dump() if isinstance(request, CommandRequest) else request
    body = {"command": name, "id": data.get("id"), "ts": data.get("ts"), "args": data.get("args") or {}}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_request(key: bytes, name: str, request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with its ``hmac`` set (what a fleet tool sends)."""
    return {**request, "hmac": hmac.new(key, canonical_request(name, request), hashlib.sha256).hexdigest()}


class HmacVerifier:
    """Checks signatures, the clock window and one-time ids of signed commands."""

    def __init__(self, key: bytes, max_skew_s: float, clock: Callable[[], float] = time.time, remember: int = 10_000) -> None:
        self._key = key
        self._skew = max_skew_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._remember = remember

    def verify(self, name: str, req: CommandRequest) -> CommandError | None:
        if not req.hmac:
            return CommandError(code="unauthorized", message="commands must be signed: add 'hmac' (see README)", field="hmac")
        if req.id is None or req.ts is None:
            return CommandError(
                code="unauthorized", message="signed commands need 'id' and 'ts'", field="id" if req.id is None else "ts"
            )
        expected = hmac.new(self._key, canonical_request(name, req), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, req.hmac.lower()):
            return CommandError(code="unauthorized", message="bad signature (wrong key, or the request changed)", field="hmac")
        now = self._clock()
        if self._skew > 0 and abs(now - req.ts) > self._skew:
            return CommandError(
                code="unauthorized",
                message=f"ts {req.ts} is {now - req.ts:+.0f} s from the device clock (limit {self._skew:.0f} s)",
                field="ts",
            )
        while self._seen and (
            len(self._seen) >= self._remember or next(iter(self._seen.values())) < now - max(self._skew, 1) * 2
        ):
            self._seen.popitem(last=False)
        if req.id in self._seen:
            return CommandError(code="replayed", message=f"request id {req.id!r} was already used", field="id")
        self._seen[req.id] = now
        return None


def _field(loc: tuple[Any, ...], prefix: str = "") -> str | None:
    path = ".".join(str(p) for p in loc)
    return f"{prefix}{path}" if path else (prefix.rstrip(".") or None)


class CommandHandler:
    """Parses, authenticates, validates and dispatches one command; answers exactly once."""

    def __init__(
        self,
        device_id: str,
        controls: Controls,
        reply: Reply,
        verifier: HmacVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.controls = controls
        self.reply = reply
        self.verifier = verifier
        self.clock = clock
        self.handled = 0
        self.failed = 0

    def answer(self, name: str, req_id: str | None, outcome: Outcome | CommandFailed, reply_to: ReplyTo | None) -> CommandResult:
        name, req_id = _printable(name), _printable(req_id)  # echoed text must encode as UTF-8 (no lone surrogates)
        if isinstance(outcome, CommandFailed):
            self.failed += 1
            err = CommandError(code=outcome.code, message=_printable(str(outcome)[:1000]), field=_printable(outcome.field))
            result = CommandResult(device_id=self.device_id, command=name, id=req_id, ok=False, error=err, time=self.clock())
        else:
            result = CommandResult(device_id=self.device_id, command=name, id=req_id, ok=True, result=outcome, time=self.clock())
        self.reply(name, result, reply_to)
        return result

    def handle(self, name: str, payload: bytes, reply_to: ReplyTo | None = None) -> CommandResult | None:
        """Answer ``payload`` sent to ``cmd/<name>``; returns the result, or None while a snapshot is pending."""
        self.handled += 1
        req_id: str | None = None
        try:
            req = self._parse(payload)
            req_id = req.id
            if self.verifier is not None:
                problem = self.verifier.verify(name, req)
                if problem is not None:
                    raise CommandFailed(problem.code, problem.message, problem.field)
            model = COMMAND_ARGS.get(name)
            if model is None:
                known = ", ".join(COMMAND_ARGS)
                if not name or "/" in name:
                    why = f"no command name at cmd/{name}: publish to <prefix>/cmd/<name>; known: {known}"
                    raise CommandFailed("unknown_command", why)
                raise CommandFailed("unknown_command", f"unknown command {name!r}; known: {known}")
            try:
                args = model.model_validate(req.args)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                raise CommandFailed(
                    "invalid_args", f"{_field(first['loc'], 'args.') or 'args'}: {first['msg']}", _field(first["loc"], "args.")
                ) from None
            if isinstance(args, SnapshotArgs):
                self.controls.snapshot(args, lambda outcome: _discard(self.answer(name, req_id, outcome, reply_to)))
                return None
            return self.answer(name, req_id, self._run(name, args), reply_to)
        except CommandFailed as exc:
            return self.answer(name, req_id, exc, reply_to)
        except Exception as exc:
            log.exception("command %s failed", name)
            return self.answer(name, req_id, CommandFailed("failed", f"{type(exc).__name__}: {exc}"), reply_to)

    def _parse(self, payload: bytes) -> CommandRequest:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandFailed("invalid_request", f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
        if not payload.strip():
            return CommandRequest()
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CommandFailed("malformed_json", f"payload is not JSON: {exc}"[:300]) from None
        if not isinstance(data, dict):
            raise CommandFailed("invalid_request", f"payload must be a JSON object, not {type(data).__name__}")
        try:
            return CommandRequest.model_validate(data, strict=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise CommandFailed(
                "invalid_request", f"{_field(first['loc']) or 'payload'}: {first['msg']}", _field(first["loc"])
            ) from None

    def _run(self, name: str, args: _Args) -> Outcome:
        c = self.controls
        try:
            if isinstance(args, SetThresholdArgs):
                return c.set_thresholds(args)
            if isinstance(args, SetPublishPolicyArgs):
                return c.set_publish_policy(args.policy)
            if name == "reload_config":
                return c.reload_config()
            if name == "check_update":
                return c.check_update()
        except ConfigError as exc:
            field = exc.problems[0][0] if exc.problems else None
            raise CommandFailed("failed", str(exc), field) from None
        raise CommandFailed("unknown_command", f"no action for {name!r}")  # unreachable while COMMAND_ARGS and _run agree


def _printable(text: str | None) -> Any:
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _discard(_: Any) -> None:
    return None


def merged_thresholds(current: Thresholds, args: SetThresholdArgs) -> Thresholds:
    return Thresholds(
        score=current.score if args.score is None else args.score,
        iou=current.iou if args.iou is None else args.iou,
        max_detections=current.max_detections if args.max_detections is None else args.max_detections,
    )
