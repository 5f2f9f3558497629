"""Video in and out for the Python API and tools/demo.py (OpenCV's VideoCapture / VideoWriter; RGB frames).

    with VideoReader("clip.mp4") as video:        # or a camera index: VideoReader(0)
        video.fps, video.frame_count, video.size  # frame_count is None for a camera or an unknown length
        for frame in video:                        # uint8 [H, W, 3] RGB
            ...
    with VideoWriter("out.mp4", fps, (width, height)) as out:
        out.write(frame_rgb)

Writers pick the codec from the extension: .mp4 / .m4v / .mov 'mp4v', .avi 'MJPG', .mkv / .webm ... 'mp4v'.
A file OpenCV cannot open (missing, not a video, a codec it lacks) raises VideoError naming it.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Tuple, Union

import numpy as np

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "is_video_path", "parse_camera", "VideoReader", "VideoWriter"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
_FOURCC = {".avi": "MJPG"}


class VideoError(OSError):
    """A video source or output that OpenCV cannot open, read or write; the message names it."""


def is_video_path(path: str) -> bool:
    """Whether `path` names a video by its extension."""
    return os.fspath(path).lower().endswith(VIDEO_EXTENSIONS)


def parse_camera(text: str) -> Optional[int]:
    """A camera index from a string of digits ('0', '1') that is not an existing file, else None."""
    text = str(text)
    return int(text) if text.isdigit() and not os.path.exists(text) else None


class VideoReader:
    """Frames of a video file or a camera, as uint8 [H, W, 3] RGB arrays (iterate it, or call read())."""

    def __init__(self, source: Union[str, int, os.PathLike]):
        import cv2

        self.source = source if isinstance(source, int) else os.fspath(source)
        if isinstance(self.source, str) and not os.path.isfile(self.source):
            raise VideoError(f"video {self.source}: no such file")
        self._cap = cv2.VideoCapture(self.source)
        if not self._cap.isOpened():
            what = f"camera {self.source}" if isinstance(self.source, int) else f"video {self.source}"
            raise VideoError(f"{what}: OpenCV cannot open it (not a video, or a codec this OpenCV build lacks)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 30.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count: Optional[int] = count if count > 0 and not isinstance(self.source, int) else None
        self.size: Tuple[int, int] = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                      int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def read(self) -> Optional[np.ndarray]:
        """The next frame (RGB), or None at the end."""
        import cv2

        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Writes uint8 [H, W, 3] RGB frames of one size to a video file (codec from the extension)."""

    def __init__(self, path: Union[str, os.PathLike], fps: float, size: Tuple[int, int]):
        import cv2

        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        ext = os.path.splitext(self.path)[1].lower()
        fourcc = cv2.VideoWriter_fourcc(*_FOURCC.get(ext, "mp4v"))
        self.size = (int(size[0]), int(size[1]))
        self._writer = cv2.VideoWriter(self.path, fourcc, float(fps), self.size)
        if not self._writer.isOpened():
            raise VideoError(f"cannot write video {self.path} (OpenCV has no writer for {ext or 'this name'})")
        self.frames = 0

    def write(self, frame_rgb: np.ndarray) -> None:
        import cv2

        if (frame_rgb.shape[1], frame_rgb.shape[0]) != self.size:
            raise ValueError(f"{self.path}: frame of {frame_rgb.shape[1]}x{frame_rgb.shape[0]}, the video is "
                             f"{self.size[0]}x{self.size[1]}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self._writer.release()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
