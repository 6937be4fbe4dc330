"""The images source: folders, globs, skipping bad files, and clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import SourceEnded, SourceError
from agent.sources.base import PixelFormat, PulledFeed, make_feed
from agent.sources.images import ImagesConfig, ImagesSource


def _picture(value: int, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:, :, 0], image[:, :, 2] = value, 255 - value  # B and R differ: catches RGB/BGR swaps
    return image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """b.png, a.jpg, c.png and a stray text file."""
    shots = tmp_path / "shots"
    shots.mkdir()
    assert cv2.imwrite(str(shots / "b.png"), _picture(100))
    assert cv2.imwrite(str(shots / "a.jpg"), _picture(50))
    assert cv2.imwrite(str(shots / "c.png"), _picture(200, (20, 10)))
    (shots / "notes.txt").write_text("not an image")
    return shots


def _read_all(src: ImagesSource) -> list[np.ndarray]:
    images = []
    while True:
        try:
            frame = src.read()
        except SourceEnded:
            return images
        assert frame.pixel_format is PixelFormat.BGR and frame.image.shape[2] == 3
        assert (frame.width, frame.height) == (frame.image.shape[1], frame.image.shape[0])
        images.append(frame.image)
        frame.release()


def test_folder_is_read_in_sorted_order_as_bgr(folder: Path) -> None:
    src = ImagesSource(ImagesConfig(path=str(folder)))
    assert not src.live and isinstance(make_feed(src), PulledFeed)
    src.open()
    images = _read_all(src)
    assert len(images) == 3  # the .txt is not an image
    assert abs(int(images[0][0, 0, 0]) - 50) <= 3 and abs(int(images[0][0, 0, 2]) - 205) <= 3  # a.jpg, lossy
    assert np.array_equal(images[1], _picture(100))  # b.png, exact
    assert images[2].shape == (10, 20, 3)  # c.png keeps its own size
    assert src.skipped == 0


def test_glob_pattern(folder: Path) -> None:
    src = ImagesSource(ImagesConfig(path=str(folder / "*.png")))
    src.open()
    images = _read_all(src)
    assert [img.shape for img in images] == [(30, 40, 3), (10, 20, 3)]


def test_recursive_glob(folder: Path) -> None:
    nested = folder / "day2"
    nested.mkdir()
    cv2.imwrite(str(nested / "z.png"), _picture(1))
    src = ImagesSource(ImagesConfig(path=str(folder / "**" / "*.png")))
    src.open()
    assert len(_read_all(src)) == 3


def test_corrupt_file_is_skipped_and_counted(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "b2.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    src = ImagesSource(ImagesConfig(path=str(folder)))
    src.open()
    with caplog.at_level(logging.WARNING, logger="agent.sources.images"):
        images = _read_all(src)
    assert len(images) == 3
    assert src.skipped == 1
    assert "b2.jpg" in caplog.text and "b2.jpg" in (src.stats.last_error or "")


def test_loop_starts_over(folder: Path) -> None:
    src = ImagesSource(ImagesConfig(path=str(folder / "*.png"), loop=True))
    src.open()
    shapes = []
    for _ in range(5):
        frame = src.read()
        shapes.append(frame.image.shape)
        frame.release()
    assert shapes == [(30, 40, 3), (10, 20, 3)] * 2 + [(30, 40, 3)]


def test_only_corrupt_files_with_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"garbage")
    (tmp_path / "y.jpg").write_bytes(b"garbage")
    src = ImagesSource(ImagesConfig(path=str(tmp_path), loop=True))
    src.open()
    with pytest.raises(SourceError, match="none of the 2 files"):
        src.read()


def test_empty_folder_names_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures")
    src = ImagesSource(ImagesConfig(path=str(empty)))
    with pytest.raises(SourceError) as err:
        src.open()
    assert str(empty) in str(err.value) and "no images" in str(err.value)


def test_unmatched_glob_and_missing_path_name_them(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.webp")
    with pytest.raises(SourceError, match="matches no files") as err:
        ImagesSource(ImagesConfig(path=pattern)).open()
    assert pattern in str(err.value)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SourceError, match="does not exist") as err:
        ImagesSource(ImagesConfig(path=missing)).open()
    assert missing in str(err.value)


def test_pulled_feed_delivers_every_image(folder: Path) -> None:
    feed = make_feed(ImagesSource(ImagesConfig(path=str(folder))))
    feed.start()
    got = 0
    with pytest.raises(SourceEnded):
        while True:
            frame = feed.next_frame()
            assert frame is not None
            frame.release()
            got += 1
    feed.stop()
    assert got == 3 and feed.source.stats.frames_captured == 3 and feed.source.stats.frames_dropped == 0
