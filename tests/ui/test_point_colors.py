"""The images-as-points view's pure functions: colouring, class search and filter, the
selection's table and CSV, the browser payload."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest

from explorer.analysis.atlas import build_atlas, to_png
from explorer.errors import ExplorerError
from explorer.ui.points import colors
from explorer.ui.points import payload as P

NAMES = ["T-shirt/top", "Trouser", "Shirt", "Ankle boot"]
PALETTE = ["#ff0000", "rgb(0, 128, 0)", "#00f", "#123456"]
Y = np.array([0, 1, 2, 3, 0, 2])
PRED = np.array([0, 1, 0, 3, 2, 2])  # positions 2 and 4 are wrong


def test_colour_by_true_and_predicted_class():
    by_true = colors.point_colors("true class", Y, PALETTE, NAMES, PRED)
    assert by_true.rgba.shape == (6, 4) and by_true.rgba.dtype == np.uint8
    assert by_true.rgba[0].tolist() == [255, 0, 0, 255] and by_true.rgba[1].tolist() == [
        0,
        128,
        0,
        255,
    ]
    assert by_true.rgba[2].tolist() == [0, 0, 255, 255], "#rgb shorthand"
    assert by_true.groups.tolist() == Y.tolist()
    assert by_true.legend[1] == ("Trouser", "#008000")
    by_pred = colors.point_colors("predicted class", Y, PALETTE, NAMES, PRED)
    assert by_pred.groups.tolist() == PRED.tolist()
    assert by_pred.rgba[2].tolist() == by_true.rgba[0].tolist(), "a shirt predicted T-shirt"


def test_colour_by_correct_or_wrong():
    c = colors.point_colors("correct or wrong", Y, PALETTE, NAMES, PRED)
    assert c.groups.tolist() == [0, 0, 1, 0, 1, 0]
    assert [name for name, _ in c.legend] == ["correct", "wrong"]
    assert tuple(c.rgba[2, :3]) == colors.to_rgb(colors.WRONG)
    assert tuple(c.rgba[0, :3]) == colors.to_rgb(colors.CORRECT)


def test_colour_by_confidence_bins_from_pale_to_dark():
    conf = np.array([0.0, 0.19, 0.2, 0.5, 0.99, 1.0])
    c = colors.point_colors("confidence", Y, PALETTE, NAMES, PRED, conf)
    assert c.groups.tolist() == [0, 0, 1, 2, 4, 4], "equal-width bins, 1.0 in the last"
    assert len(c.legend) == colors.CONFIDENCE_BINS and c.legend[0][0] == "confidence 0–20%"
    light = c.rgba[0, :3].astype(int).sum()
    dark = c.rgba[5, :3].astype(int).sum()
    assert light > dark, "low confidence is pale, high is dark"


def test_colourings_that_lack_their_inputs_say_so():
    with pytest.raises(ExplorerError, match="needs the probe's predictions"):
        colors.point_colors("correct or wrong", Y, PALETTE, NAMES)
    with pytest.raises(ExplorerError, match="needs the probe's confidences"):
        colors.point_colors("confidence", Y, PALETTE, NAMES, PRED)
    with pytest.raises(ExplorerError, match="unknown colouring"):
        colors.point_colors("size", Y, PALETTE, NAMES)
    with pytest.raises(ExplorerError, match="unreadable colour"):
        colors.to_rgb("red")


def test_search_classes_by_name_and_filter_points():
    assert colors.search_classes("shirt", NAMES) == [0, 2], "case-insensitive substring"
    assert colors.search_classes(" BOOT , trou", NAMES) == [1, 3], "comma-separated terms"
    assert colors.search_classes("", NAMES) == [0, 1, 2, 3], "empty: every class"
    assert colors.search_classes("sandal", NAMES) == []
    mask = colors.shown_mask(Y, colors.search_classes("shirt", NAMES))
    assert mask.tolist() == [True, False, True, False, True, True]
    assert not colors.shown_mask(Y, []).any()


def test_selection_table_counts_and_accuracy_per_class():
    t = colors.selection_table([0, 2, 4, 5], Y, NAMES, PRED)
    assert t["class"].tolist() == ["T-shirt/top", "Shirt"], "most selected first, others left out"
    assert t["selected"].tolist() == [2, 2]
    assert t["of the class (%)"].tolist() == [100.0, 100.0]
    assert t["correct"].tolist() == [1, 1] and t["top-1 on them (%)"].tolist() == [50.0, 50.0]
    plain = colors.selection_table([1], Y, NAMES)
    assert "correct" not in plain and plain["selected"].tolist() == [1]


def test_selection_csv_has_dataset_indices_and_file_names():
    ids = np.array([100, 101, 102, 103, 104, 105])
    files = [f"img_{i}.png" for i in ids]
    frame = pd.read_csv(io.BytesIO(colors.selection_csv([4, 1], ids, files, Y, NAMES, PRED)))
    assert frame.columns.tolist() == [
        "test_position",
        "dataset_index",
        "file",
        "label",
        "predicted",
    ]
    assert (
        frame["dataset_index"].tolist() == [104, 101] and frame["file"].tolist()[0] == "img_104.png"
    )
    assert frame["label"].tolist() == ["T-shirt/top", "Trouser"]
    assert frame["predicted"].tolist() == ["Shirt", "Trouser"]
    with pytest.raises(ExplorerError, match="file names"):
        colors.selection_csv([0], ids, files[:2], Y, NAMES)


def test_neighbour_confidence_is_the_share_of_neighbours_agreeing():
    # two tight clusters: class 0 near (1, 0), class 1 near (0, 1)
    x = np.array([[1, 0.01], [1, 0.02], [1, 0.03], [0.01, 1], [0.02, 1], [0.03, 1]], np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 0])
    conf = colors.neighbour_confidence(x, y, pred, k=2)
    assert conf.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def _args(n=5, k=1, **extra):
    ims = [np.full((6, 6), 40 * i, np.uint8) for i in range(n)]
    pixels, lay = build_atlas([ims], n)
    y = np.arange(n) % 2
    c = colors.point_colors("true class", y, PALETTE, NAMES[:2])
    xy = np.arange(k * n * 2, dtype=np.float32).reshape(k, n, 2)
    return P.payload(
        xy,
        [f"p{i}" for i in range(k)],
        y,
        NAMES[:2],
        c,
        to_png(pixels),
        lay,
        np.arange(n) + 7,
        **extra,
    )


def test_payload_packs_arrays_as_little_endian_bytes():
    args = _args(n=5, k=2)
    xy = np.frombuffer(args["xy"], "<f4").reshape(2, 5, 2)
    assert xy[1, 4].tolist() == [18.0, 19.0]
    assert np.frombuffer(args["ids"], "<i4").tolist() == [7, 8, 9, 10, 11]
    assert np.frombuffer(args["shown"], np.uint8).tolist() == [1] * 5
    assert (
        args["pred"] is None and args["atlas"]["count"] == 5 and args["atlas_png"][:4] == b"\x89PNG"
    )
    assert args["data_id"] == _args(n=5, k=2)["data_id"] != _args(n=4, k=2)["data_id"]
    with pytest.raises(ExplorerError, match="positions must be"):
        P.payload(np.zeros((5, 3)), ["a"], np.zeros(5), NAMES, None, b"", None, np.arange(5))


def test_a_served_atlas_travels_as_its_url_and_keeps_the_data_id():
    inline, served = _args(), _args(atlas_url="/media/abc.png")
    assert served["atlas_png"] is None and served["atlas_url"] == "/media/abc.png"
    assert inline["atlas_url"] is None and inline["atlas_png"][:4] == b"\x89PNG"
    assert served["data_id"] == inline["data_id"], "the id still follows the atlas's bytes"


def test_inline_html_is_offline_and_script_safe():
    args = _args()
    args["titles"] = ["</script><b>x"]
    page = P.page_html(args)
    assert "PointsView.mount" in page
    assert "</script><b>" not in page, "no way out of the script element"
    blob = page.rsplit('PointsView.mount(document.getElementById("points"), ', 1)[1]
    data = json.loads(blob.rsplit(");</script>", 1)[0])
    assert base64.b64decode(data["atlas_png"])[:4] == b"\x89PNG"
    for attr in ('src="http', "src='http", 'href="http', "href='http"):
        assert attr not in page, "no script, style or image is fetched: the bundle is inline"
