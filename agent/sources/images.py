"""The ``images`` source: a folder of pictures, or a glob, read one by one.

Not live: the pipeline pulls the next image when it is ready, so every image is processed
and none is dropped. Good for evaluating a model on a fixed set of shots. A file that
cannot be decoded is skipped with a warning and counted (``skipped``), not fatal: one bad
JPEG in a thousand should not stop a run.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Literal

import cv2
from pydantic import Field

from agent.errors import SourceEnded, SourceError
from agent.sources.base import Frame, FrameSource, PixelFormat, SourceConfigBase, now_stamps

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
_GLOB_CHARS = frozenset("*?[")


class ImagesConfig(SourceConfigBase):
    """Settings of the ``images`` source."""

    type: Literal["images"] = Field("images", description="Selects the image folder/glob source.")
    path: str = Field(
        ...,
        min_length=1,
        description=(
            "A folder (its jpg/jpeg/png/bmp/webp files, in sorted name order, not recursive), a single image "
            "file, or a glob pattern such as 'shots/**/*.jpg' (matches in sorted order; ** recurses)."
        ),
    )
    loop: bool = Field(False, description="Start again from the first image after the last one instead of ending.")


def list_images(pattern: str) -> list[Path]:
    """The image files ``pattern`` names, sorted; raises :class:`SourceError` when there are none."""
    expanded = str(Path(pattern).expanduser())
    path = Path(expanded)
    if any(ch in _GLOB_CHARS for ch in expanded):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise SourceError(f"images source: the pattern {pattern!r} matches no files; check the pattern and folder")
        return files
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            kinds = "/".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))
            raise SourceError(f"images source: the folder {expanded} contains no images ({kinds}); add some or fix `path`")
        return files
    if path.is_file():
        return [path]
    raise SourceError(f"images source: {expanded} does not exist; give a folder, an image file or a glob pattern")


class ImagesSource(FrameSource):
    """Decodes each listed file to BGR in turn; ends (or loops) after the last one."""

    type_key = "images"
    config_model = ImagesConfig
    config: ImagesConfig

    def __init__(self, config: ImagesConfig) -> None:
        super().__init__(config)
        self._files: list[Path] = []
        self._index = 0
        self.skipped = 0  # unreadable files met so far (each pass counts again)

    def open(self) -> None:
        self._files = list_images(self.config.path)
        self._index = 0
        log.info("images source %s: %d files from %s", self.config.id, len(self._files), self.config.path)

    def read(self) -> Frame:
        if not self._files:
            raise RuntimeError(f"images source {self.config.id!r} read before open()")
        failures_in_a_row = 0
        while True:
            if self._index >= len(self._files):
                if not self.config.loop:
                    raise SourceEnded(f"images source {self.config.id!r}: all {len(self._files)} files read")
                self._index = 0
            path = self._files[self._index]
            self._index += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # always 3-channel BGR; decoding allocates anyway
            if image is not None:
                break
            self.skipped += 1
            self.stats.frames_skipped += 1
            failures_in_a_row += 1
            self.stats.last_error = f"unreadable image {path}"
            log.warning("images source %s: skipping %s (not a readable image)", self.config.id, path)
            if failures_in_a_row >= len(self._files):
                raise SourceError(
                    f"images source {self.config.id!r}: none of the {len(self._files)} files under "
                    f"{self.config.path} could be decoded; check that they are jpg/png/bmp/webp images"
                )
        monotonic_ns, wall = now_stamps()
        height, width = image.shape[:2]
        return Frame(
            image=image,
            pixel_format=PixelFormat.BGR,
            frame_id=self.next_frame_id(),
            source_id=self.config.id,
            capture_monotonic_ns=monotonic_ns,
            capture_wall_time=wall,
            width=width,
            height=height,
        )

    def close(self) -> None:
        self._files = []
