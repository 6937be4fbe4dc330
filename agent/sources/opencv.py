"""The ``opencv`` source: a USB/V4L2 camera, a network stream (RTSP/HTTP) or a video file.

* ``device`` (index or ``/dev/video*`` path): opened with ``cv2.CAP_V4L2`` and
  ``CAP_PROP_BUFFERSIZE=1`` so a read returns the newest frame, not one 3-4 frames old.
  Live; a failed read raises so the :class:`~agent.sources.base.LiveReader` reconnects.
* ``url`` (rtsp/rtsps/http/https/rtmp): opened with ``cv2.CAP_FFMPEG`` and explicit open/read
  timeouts (without them a vanished camera blocks for ~30 s). RTSP runs over TCP via
  ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` (merged with any value the user set, never clobbered).
  Live; a failed read (stream ended, read timeout) raises so the reader reconnects.
* ``file``: ``pace: realtime`` plays it at its own fps on a monotonic schedule (a live source
  that simulates a camera: frames drop if inference is slower); ``pace: fast`` decodes as fast
  as the pipeline pulls (nothing dropped). ``loop`` restarts at the end, else the source ends.

Frames are decoded into recycled buffers (``retrieve(image=buf)``), so the steady state
allocates no frame-sized array; capture time is stamped right after ``grab()``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from agent.errors import SourceEnded, SourceError
from agent.sources.base import DeadlinePacer, Frame, FramePool, FrameSource, PixelFormat, SourceConfigBase, now_stamps

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
_DEVICE_ONLY = ("width", "height", "fps", "fourcc")
_URL_ONLY = ("open_timeout_ms", "read_timeout_ms", "rtsp_transport")
_ENV_LOCK = threading.Lock()  # the FFmpeg options variable is process-wide


class OpenCVConfig(SourceConfigBase):
    """Settings of the ``opencv`` source: exactly one of ``device``, ``url`` or ``file``."""

    type: Literal["opencv"] = Field("opencv", description="Selects the OpenCV VideoCapture source.")
    device: int | str | None = Field(
        None, description="V4L2 camera: an index (0 = /dev/video0) or a device path such as /dev/video0."
    )
    url: str | None = Field(None, description="Network stream URL: rtsp://, rtsps://, http(s):// or rtmp://.")
    file: str | None = Field(None, description="Path of a video file to play.")
    width: int | None = Field(None, ge=16, le=8192, description="Camera only: requested frame width in pixels.")
    height: int | None = Field(None, ge=16, le=8192, description="Camera only: requested frame height in pixels.")
    fps: float | None = Field(None, gt=0, le=1000, description="Camera only: requested frame rate.")
    fourcc: str | None = Field(
        None, min_length=4, max_length=4, description="Camera only: pixel format to request, e.g. MJPG or YUYV."
    )
    open_timeout_ms: int = Field(5000, ge=100, le=120_000, description="Stream only: give up opening after this long.")
    read_timeout_ms: int = Field(
        5000, ge=100, le=120_000, description="Stream only: a read stalled this long counts as a lost stream."
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP transport; TCP avoids smeared frames and hangs on lossy or TCP-only links."
    )
    pace: Literal["realtime", "fast"] = Field(
        "realtime",
        description="File only: 'realtime' plays at the file's fps like a camera (frames may drop); "
        "'fast' decodes every frame as fast as inference runs.",
    )
    loop: bool = Field(False, description="File only: start over at the end instead of ending.")
    buffers: int = Field(4, ge=2, le=16, description="Recycled frame buffers shared with the pipeline.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            value = value.strip()
            if value.isdigit():
                return int(value)
            if not value.startswith("/dev/"):
                raise ValueError(f"device must be a camera index or a /dev/... path, not {value!r}")
        elif isinstance(value, int) and value < 0:
            raise ValueError(f"device index must be 0 or more, not {value}")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme.lower() not in _URL_SCHEMES:
            raise ValueError(f"url must start with one of {', '.join(s + '://' for s in _URL_SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> OpenCVConfig:
        given = [name for name in ("device", "url", "file") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of device, url or file" + (f" (got {', '.join(given)})" if given else ""))
        if self.device is None and (camera_only := [n for n in _DEVICE_ONLY if getattr(self, n) is not None]):
            raise ValueError(f"{', '.join(camera_only)}: only for a camera (`device`), not a url or file")
        if self.file is None and (file_only := [n for n in ("pace", "loop") if n in self.model_fields_set]):
            raise ValueError(f"{', '.join(file_only)}: only for a video `file`")
        if self.url is None and (url_only := [n for n in _URL_ONLY if n in self.model_fields_set]):
            raise ValueError(f"{', '.join(url_only)}: only for a stream `url`")
        return self


def merge_ffmpeg_options(existing: str | None, transport: str) -> str:
    """Add ``rtsp_transport;<transport>`` to an FFmpeg options string unless it sets a transport already."""
    pairs = [pair for pair in (existing or "").split("|") if pair.strip()]
    if any(pair.split(";", 1)[0].strip() == "rtsp_transport" for pair in pairs):
        return "|".join(pairs)  # the user's explicit choice wins
    return "|".join([*pairs, f"rtsp_transport;{transport}"])


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class OpenCVSource(FrameSource):
    """One ``cv2.VideoCapture``; see the module docstring for how each input kind behaves."""

    type_key = "opencv"
    config_model = OpenCVConfig
    config: OpenCVConfig

    def __init__(self, config: OpenCVConfig) -> None:
        super().__init__(config)
        self._cap: cv2.VideoCapture | None = None
        self._pool: FramePool | None = None
        self._pool_shape: tuple[int, ...] | None = None
        self._pacer = DeadlinePacer(0)

    @property
    def kind(self) -> Literal["device", "url", "file"]:
        cfg = self.config
        return "device" if cfg.device is not None else "url" if cfg.url is not None else "file"

    @property
    def live(self) -> bool:
        return self.kind != "file" or self.config.pace == "realtime"

    def describe(self) -> str:
        """What this source reads, safe to log (no password)."""
        cfg = self.config
        if cfg.device is not None:
            return f"camera {cfg.device if isinstance(cfg.device, str) else f'/dev/video{cfg.device}'}"
        return f"stream {redact_url(cfg.url)}" if cfg.url is not None else f"file {cfg.file}"

    # -- opening ------------------------------------------------------------------------------
    def open(self) -> None:
        opener = {"device": self._open_device, "url": self._open_url, "file": self._open_file}[self.kind]
        self._cap = opener()
        if self.kind == "file" and self.config.pace == "realtime":
            fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if not 0.0 < fps <= 1000.0:
                log.warning(
                    "opencv source %s: %s reports no usable fps (%r); pacing at 30", self.config.id, self.config.file, fps
                )
                fps = 30.0
            self._pacer = DeadlinePacer(fps)
        self._pacer.reset()

    def _fail(self, what: str, todo: str) -> SourceError:
        return SourceError(f"opencv source {self.config.id!r}: {what}; {todo}")

    def _open_device(self) -> cv2.VideoCapture:
        cfg = self.config
        node = cfg.device if isinstance(cfg.device, str) else f"/dev/video{cfg.device}"
        if not os.path.exists(node):
            raise self._fail(
                f"no camera at {node}",
                "plug it in, list cameras with `v4l2-ctl --list-devices`, "
                "or fix `device` (CSI ribbon cameras use the picamera2 source)",
            )
        if not os.access(node, os.R_OK | os.W_OK):
            raise self._fail(
                f"no permission to open {node}", "add the user to group video (SupplementaryGroups=video under systemd)"
            )
        cap = cv2.VideoCapture(cfg.device, cv2.CAP_V4L2)  # type: ignore[arg-type]  # int index or /dev path
        if not cap.isOpened():
            cap.release()
            raise self._fail(
                f"{node} exists but cannot be opened for capture",
                "is another program using it, or is it a metadata node? try the next /dev/videoN",
            )
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep one buffer: read the newest frame, not a stale one
        if cfg.fourcc:  # before the size: some cameras only offer large sizes in MJPG
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, cfg.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height),
            (cv2.CAP_PROP_FPS, cfg.fps),
        ):
            if value is not None:
                cap.set(prop, float(value))
        got = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS))
        log.info("opencv source %s: %s open at %dx%d %.1f fps", cfg.id, node, got[0], got[1], got[2])
        if (cfg.width and int(got[0]) != cfg.width) or (cfg.height and int(got[1]) != cfg.height):
            log.warning(
                "opencv source %s: %s gives %dx%d, not the requested %sx%s", cfg.id, node, got[0], got[1], cfg.width, cfg.height
            )
        return cap

    def _open_url(self) -> cv2.VideoCapture:
        cfg = self.config
        assert cfg.url is not None
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, cfg.open_timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, cfg.read_timeout_ms]
        with _ENV_LOCK:
            user_value = os.environ.get(FFMPEG_OPTIONS_ENV)
            if urlsplit(cfg.url).scheme.lower().startswith("rtsp"):
                os.environ[FFMPEG_OPTIONS_ENV] = merge_ffmpeg_options(user_value, cfg.rtsp_transport)
            try:
                cap = cv2.VideoCapture(cfg.url, cv2.CAP_FFMPEG, params)  # FFmpeg reads the options at open
            finally:  # leave the environment as the user had it (other streams may want another transport)
                if user_value is None:
                    os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                else:
                    os.environ[FFMPEG_OPTIONS_ENV] = user_value
        if not cap.isOpened():
            cap.release()
            raise self._fail(
                f"cannot open {self.describe()} within {cfg.open_timeout_ms} ms",
                "check the URL, credentials, network and that the camera is on",
            )
        return cap

    def _open_file(self) -> cv2.VideoCapture:
        path = Path(str(self.config.file)).expanduser()
        if not path.is_file():
            raise self._fail(f"video file {path} does not exist", "fix `file`")
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise self._fail(f"cannot decode video file {path}", "is it a video OpenCV's FFmpeg can read?")
        return cap

    # -- reading ------------------------------------------------------------------------------
    def read(self) -> Frame:
        if self._cap is None:
            raise RuntimeError(f"opencv source {self.config.id!r} read before open()")
        missed = self._pacer.wait()  # realtime files only; a no-op otherwise
        for _ in range(missed):  # like a camera, a late reader misses the frames shown meanwhile
            if self._cap.grab():
                self.stats.frames_dropped += 1
        if not self._cap.grab():
            self._grab_failed()
        stamps = now_stamps()  # right after grab: the moment the frame was taken off the device
        image, release = self._retrieve()
        height, width = image.shape[:2]
        return Frame(
            image=image,
            pixel_format=PixelFormat.BGR if image.ndim == 3 else PixelFormat.GRAY,
            frame_id=self.next_frame_id(),
            source_id=self.config.id,
            capture_monotonic_ns=stamps[0],
            capture_wall_time=stamps[1],
            width=width,
            height=height,
            _release=release,
        )

    def _grab_failed(self) -> None:
        """After a failed grab: loop or end a file; for a camera/stream raise so the reader reconnects."""
        if self.kind != "file":
            raise self._fail(f"lost {self.describe()} (read failed or timed out)", "reconnecting")
        if not self.config.loop:
            raise SourceEnded(f"opencv source {self.config.id!r}: end of {self.config.file}")
        assert self._cap is not None
        self._cap.release()  # reopening rewinds reliably, even for containers that seek badly
        self._cap = self._open_file()
        if not self._cap.grab():
            raise self._fail(f"{self.config.file} has no decodable frames", "check the file")

    def _retrieve(self) -> tuple[np.ndarray, Callable[[], None] | None]:
        """Decode the grabbed frame into a pool buffer; returns (image, release callback or None)."""
        assert self._cap is not None
        buf = self._pool.acquire() if self._pool is not None else None
        ok, image = self._cap.retrieve(image=buf) if buf is not None else self._cap.retrieve()
        if buf is not None and ok and image is buf:
            return image, self._pool.release_fn(buf)  # type: ignore[union-attr]  # decoded in place
        if buf is not None:
            self._pool.release_fn(buf)()  # type: ignore[union-attr]  # unused: give it straight back
        if not ok or image is None:
            if self.kind == "file":
                raise self._fail(f"cannot decode a frame of {self.config.file}", "the file may be corrupt")
            raise self._fail(f"lost {self.describe()} (decode failed)", "reconnecting")
        if image.shape != self._pool_shape:  # first frame, or the stream changed size: size the pool to it
            self._pool = FramePool(image.shape, image.dtype, count=self.config.buffers)
            self._pool_shape = image.shape
            log.debug("opencv source %s: frame buffers sized %s", self.config.id, image.shape)
        return image, None  # a one-off array of its own: nothing to give back

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
