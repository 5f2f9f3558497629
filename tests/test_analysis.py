"""detection/analysis: TIDE's breakdown against the tidecv package, the confusion matrix, AP per size band, and the
one-file HTML report of tools/analyze_results.py (parsed: every picture embedded and decodable, nothing external)."""
import base64
import html.parser
import json
import os
import sys
import types

import cv2
import numpy as np
import pytest

from fixtures_data import write_voc_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_images(seed, n_images=40, n_classes=4, ties=False):
    """Ground truth (10% ignored) and detections with every kind of error: jittered true positives, wrong classes,
    duplicates, poor boxes, background boxes and missed boxes; `ties` rounds the scores to one decimal."""
    from detection.analysis.tide import ImageDetections

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        g = int(rng.integers(0, 6))
        xy, wh = rng.uniform(0, 200, (g, 2)), rng.uniform(8, 80, (g, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(1, n_classes + 1, g)
        boxes, det_labels = [], []
        for b, c in zip(gt, labels):
            if rng.random() < 0.15:
                continue  # missed
            for _ in range(int(rng.integers(1, 4))):  # duplicates
                boxes.append(b + rng.normal(0, rng.choice([2, 6, 15]), 4))
                det_labels.append(c if rng.random() < 0.8 else rng.integers(1, n_classes + 1))
        for _ in range(int(rng.integers(0, 4))):  # background
            xy, wh = rng.uniform(0, 250, 2), rng.uniform(5, 60, 2)
            boxes.append(np.concatenate([xy, xy + wh]))
            det_labels.append(rng.integers(1, n_classes + 1))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.random(len(boxes))
        images.append(ImageDetections(gt, labels, rng.random(g) < 0.1, boxes, np.round(scores, 1) if ties else scores,
                                      np.asarray(det_labels, np.int64)))
    return images


def _tidecv():
    """The tidecv package (a test reference only; its plotting module needs pandas and seaborn, which the
    computation does not use, so a stand-in takes its place)."""
    pytest.importorskip("appdirs", reason="tidecv's import needs appdirs (pip install appdirs tidecv --no-deps)")
    sys.modules.setdefault("tidecv.plotting", types.SimpleNamespace(Plotter=lambda: None))
    return pytest.importorskip("tidecv", reason="the TIDE reference: pip install --no-deps tidecv==1.0.1 appdirs")


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, False), (3, True)])
def test_tide_matches_the_tidecv_package(seed, ties):
    from detection.analysis.tide import tide_errors

    tidecv = _tidecv()
    images = random_images(seed, ties=ties)
    gt, preds = tidecv.Data("gt"), tidecv.Data("pred")
    for i, im in enumerate(images):
        gt.add_image(i, str(i))
        for b, c, ignore in zip(im.gt_boxes, im.gt_labels, im.gt_ignore):
            xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            (gt.add_ignore_region if ignore else gt.add_ground_truth)(i, int(c), box=xywh)
        for b, c, s in zip(im.boxes, im.labels, im.scores):
            preds.add_detection(i, int(c), float(s), box=[b[0], b[1], b[2] - b[0], b[3] - b[1]])
    tide = tidecv.TIDE()
    run = tide.evaluate(gt, preds, mode=tidecv.TIDE.BOX)
    errors = tide.get_all_errors()
    main, special = errors["main"]["pred"], errors["special"]["pred"]
    ours = tide_errors(images)
    assert ours.ap == pytest.approx(run.ap, abs=1e-9)
    names = dict(cls="Cls", loc="Loc", both="Both", dupe="Dupe", bkg="Bkg", missed="Miss")
    for key, name in names.items():
        assert ours.main[key] == pytest.approx(main[name], abs=1e-9), key
        assert ours.counts[key] == len(run.error_dict[next(t for t in run.error_dict if t.short_name == name)]), key
    assert ours.special["false_pos"] == pytest.approx(special["FalsePos"], abs=1e-9)
    assert ours.special["false_neg"] == pytest.approx(special["FalseNeg"], abs=1e-9)
    assert sum(ours.counts.values()) > 50 and min(ours.counts.values()) > 0  # every kind of error occurred


def test_tide_kinds_on_a_handmade_image():
    from detection.analysis.tide import ImageDetections, tide_errors

    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [70, 0, 90, 20]], np.float64)
    dets = np.array([[0, 0, 10, 10],      # true positive (class 1)
                     [0, 0, 10, 11],      # duplicate of it
                     [20, 20, 40, 40],    # right box, wrong class
                     [50, 50, 56, 56],    # class 1, IoU 0.36: localisation
                     [100, 100, 120, 120],  # background
                     [70, 0, 84, 14]], np.float64)  # wrong class and IoU 0.49: both
    im = ImageDetections(gt, np.array([1, 2, 1, 2]), np.zeros(4, bool), dets,
                         np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), np.array([1, 1, 1, 1, 1, 1]))
    result = tide_errors([im])
    assert [e["type"] for e in result.errors] == ["dupe", "cls", "loc", "bkg", "both", "missed"]
    assert result.errors[-1]["gt_box"] == [70, 0, 90, 20]  # the only box no error could fix


def test_confusion_matrix_counts_matches_misses_and_background():
    from detection.analysis.confusion import confusion_csv, confusion_matrix
    from detection.analysis.tide import ImageDetections

    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [70, 70, 80, 80]], np.float64)
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [21, 21, 40, 40], [100, 100, 110, 110], [70, 70, 80, 80],
                     [50, 50, 60, 60]], np.float64)
    im = ImageDetections(gt, np.array([1, 2, 1, 2]), np.array([False, False, False, True]), dets,
                         np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.3]), np.array([1, 1, 1, 2, 2, 1]))
    m = confusion_matrix([im], 2, score_thresh=0.5)
    # box 1 (class 1) found as 1; box 2 (class 2) found as 1; box 3 (class 1) missed (its detection scores 0.3);
    # the duplicate of box 1 and the detection at 100 are background; the one on the ignored box 4 is left out
    np.testing.assert_array_equal(m, [[1, 0, 1], [1, 0, 0], [1, 1, 0]])
    assert confusion_csv(m, ["a", "b"], 0.5, 0.5).splitlines()[1:] == [
        "ground truth \\ predicted,a,b,background", "a,1,0,1", "b,1,0,0", "background,1,1,0"]


def test_ap_per_size_band():
    from detection.analysis.size_ap import ap_per_size
    from detection.analysis.tide import ImageDetections

    gt = np.array([[0, 0, 10, 10], [0, 0, 50, 50], [100, 100, 200, 200]], np.float64)  # small, medium, large
    dets = np.array([[0, 0, 10, 10], [100, 100, 200, 200], [300, 300, 340, 340]], np.float64)  # medium missed
    im = ImageDetections(gt, np.array([1, 1, 1]), np.zeros(3, bool), dets, np.array([0.9, 0.8, 0.7]),
                         np.array([1, 1, 1]))
    ap = ap_per_size([im], 1)
    assert ap["small"] == pytest.approx(1.0) and ap["large"] == pytest.approx(1.0) and ap["medium"] == 0.0
    assert 0.5 < ap["all"] < 0.7  # two of three found, then a false positive
    only_small = ImageDetections(gt[:1], np.array([1]), np.zeros(1, bool), dets[:1], np.array([0.9]), np.array([1]))
    assert ap_per_size([only_small], 1)["large"] is None


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.headings, self._in_h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def check_report(path):
    """Parse a report.html: every <img> is an embedded PNG / JPEG that decodes; nothing else is referenced."""
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    assert page.images and not page.links
    for src in page.images:
        head, _, data = src.partition(",")
        assert head in ("data:image/png;base64", "data:image/jpeg;base64"), src[:40]
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.shape[0] > 20 and picture.shape[1] > 20
    return page


def test_analyze_results_writes_one_self_contained_report(tmp_path, capsys):
    import analyze_results

    images = [("000001", 60, 80, [dict(name="dog", bbox=(11, 6, 40, 30)), dict(name="cat", bbox=(51, 21, 70, 55))]),
              ("000002", 90, 50, [dict(name="cat", bbox=(5, 10, 30, 50), difficult=1),
                                  dict(name="dog", bbox=(10, 61, 45, 85))]),
              ("000003", 50, 70, [])]
    devkit = write_voc_dataset(str(tmp_path), images=images, splits={"test": ["000001", "000002", "000003"]})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"DATA: {{ROOT: '{devkit}', TEST_SET: 2007_test, CLASSES: [cat, dog]}}\n"
                   f"OUTPUT_DIR: '{tmp_path / 'run'}'\n")
    results = tmp_path / "run" / "inference"
    results.mkdir(parents=True)
    dets = {"000001": [([10, 5, 40, 30], 2, 0.95), ([50, 20, 70, 55], 1, 0.9), ([50, 20, 70, 55], 2, 0.6)],
            "000002": [([9, 60, 45, 85], 1, 0.8), ([5, 5, 20, 20], 2, 0.7)],
            "000003": [([1, 1, 30, 30], 1, 0.99)]}
    predictions = [{"image_id": k, "file": k, "detections": [{"box_xyxy": b, "label": c, "score": s}
                                                             for b, c, s in v]} for k, v in dets.items()]
    (results / "predictions.json").write_text(json.dumps(predictions))
    assert analyze_results.main([str(results), "--cfg", str(cfg), "--num-worst", "4"]) == 0
    out = results / "analysis"
    assert "report:" in capsys.readouterr().out
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["tide"]["counts"] == {"cls": 2, "loc": 0, "both": 0, "dupe": 0, "bkg": 2, "missed": 0}
    assert summary["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 1, 0], [1, 2, 0]]
    assert [e["type"] for e in summary["worst_false_positives"]] == ["bkg", "cls", "bkg", "cls"]
    for name in summary["files"]:
        assert (out / name).is_file(), name
    page = check_report(out / "report.html")
    assert len(page.images) == 4 and "TIDE error breakdown" in page.headings  # no missed box: no missed sheet
    assert not (out / "largest_missed.jpg").exists()
    # a predictions.json that names an image outside the test set is a one-line error
    (results / "predictions.json").write_text(json.dumps(predictions + [{"image_id": "x", "detections": []}]))
    assert analyze_results.main([str(results), "--cfg", str(cfg)]) == 2
    assert "not in the test set" in capsys.readouterr().err


def test_the_report_renders_in_headless_chromium(tmp_path):
    """The report opened from disk by a real browser (Debian's chromium): the screenshot shows the pictures."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless browser: apt-get install chromium")
    from detection.analysis import plots
    from detection.analysis.report import html_page, image_tag

    chart = plots.bar_chart({"a": 1.0, "b": 3.0}, "a chart", "value", color="#ff0000", size=(4, 3))
    page = tmp_path / "report.html"
    page.write_text(html_page("check", [("chart", image_tag(chart, "chart"))]))
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=800,700", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    picture = cv2.imread(str(shot))
    red = (picture[..., 2] > 200) & (picture[..., 1] < 60) & (picture[..., 0] < 60)
    assert red.sum() > 2000  # the embedded chart's red bars were drawn by the browser
