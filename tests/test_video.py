"""Video in the Python API (Predictor.video: a generator over the frames, batched) and in tools/demo.py (an
annotated video with OpenCV): a short synthetic clip, its frame count, and the boxes drawn on the frames."""
import json
import os

import cv2
import numpy as np
import pytest

from model_fixtures import QUICKSTART_CLASSES, build_seeded, tiny_config, write_run_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FRAMES = 7


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = tiny_config()
    return write_run_folder(str(tmp_path_factory.mktemp("run")), cfg, build_seeded(cfg, seed=1), QUICKSTART_CLASSES)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 7-frame 160x120 .mp4: a square moving over a striped background."""
    from detection.video_io import VideoWriter

    path = str(tmp_path_factory.mktemp("clip") / "clip.mp4")
    frames = []
    with VideoWriter(path, 10.0, (160, 120)) as out:
        for k in range(FRAMES):
            frame = np.full((120, 160, 3), 90, np.uint8)
            frame[:, ::16] = 200
            frame[30:70, 20 + 10 * k:60 + 10 * k] = (230, 40, 40)
            out.write(frame)
            frames.append(frame)
    return path


def _read_all(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def test_predictor_video_yields_every_frame_in_order_batched(run_dir, clip):
    import detection

    model = detection.load(run_dir)
    calls = []
    predict = model.predict_tensors
    model.predict_tensors = lambda images: calls.append(len(images)) or predict(images)
    results = list(model.video(clip, batch_size=3))
    assert [r.frame_index for r in results] == list(range(FRAMES)) and calls == [3, 3, 1]
    decoded = _read_all(clip)
    for result, frame in zip(results, decoded):
        np.testing.assert_array_equal(result.image, frame)
        single = model(frame)  # the same detections one frame at a time
        np.testing.assert_allclose(result.boxes, single.boxes, atol=1e-3)
    # boxes are drawn: the first detection's top edge has its class colour
    from detection.utils.visualize import class_color

    r = next(r for r in results if len(r.above(0.0).boxes))
    drawn = r.draw(0.0)
    order = np.argsort(r.scores, kind="stable")
    top = order[-1]  # drawn last, so on top
    x1, y1, x2, _ = (int(v) for v in np.floor(r.boxes[top]))
    row = drawn[min(max(y1, 0), drawn.shape[0] - 1), max(x1, 0) + 1:min(int(x2), drawn.shape[1]) - 1]
    assert (row == class_color(int(r.labels[top]) - 1)).all(axis=1).any()
    assert [r.frame_index for r in model.video(clip, batch_size=2, max_frames=3)] == [0, 1, 2]


def test_demo_writes_an_annotated_video(run_dir, clip, tmp_path, capsys):
    import demo

    out = tmp_path / "demo"
    assert demo.main(["--cfg", os.path.join(run_dir, "config.yaml"), "--input", clip, "--output", str(out),
                      "--score-thresh", "0.0", "--batch-size", "4"]) == 0
    assert f"{FRAMES} frames" in capsys.readouterr().out
    written = _read_all(str(out / "clip.mp4"))
    original = _read_all(clip)
    assert len(written) == FRAMES and written[0].shape == original[0].shape
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [entry["frame"] for entry in lines] == list(range(FRAMES))
    for entry, a, b in zip(lines, written, original):
        changed = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 60
        assert bool(entry["detections"]) == (changed.mean() > 0.002)  # boxes drawn exactly where detected
    assert any(entry["detections"] for entry in lines)
    summary = json.loads((out / "detections.json").read_text())
    assert summary["images"][0]["frames"] == FRAMES
    assert demo.main(["--cfg", os.path.join(run_dir, "config.yaml"), "--input", str(tmp_path / "missing.mp4")]) == 2


def test_camera_indices_and_unreadable_sources():
    from detection.video_io import VideoError, VideoReader, parse_camera

    assert parse_camera("0") == 0 and parse_camera("clip.mp4") is None
    with pytest.raises(VideoError, match="camera 9: OpenCV cannot open it"):
        VideoReader(9)  # no camera on a test machine (where one exists, demo.py --input 0 reads it)
    with pytest.raises(VideoError, match="no such file"):
        VideoReader("nowhere.mp4")
