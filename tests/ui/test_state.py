"""URL <-> widget state: a link restores the view, the view writes the link, bad links fall back."""

from __future__ import annotations

import pandas as pd
from streamlit.testing.v1 import AppTest

from explorer.results import COLUMNS
from explorer.ui import services


def _script():
    import streamlit as st

    from explorer.ui import state

    t = state.integer("p_t", "t", 100, 0, 999)(st.slider, "t", min_value=0, max_value=999)
    block = state.choice("p_block", "block", ["a", "b", "c"], "b")(
        st.selectbox, "block", options=["a", "b", "c"]
    )
    ts = state.choices("p_ts", "ts", [1, 2, 3], [1], parse=int)(
        st.multiselect, "ts", options=[1, 2, 3]
    )
    on = state.flag("p_on", "on", False)(st.toggle, "on")
    st.write(f"t={t} block={block} ts={ts} on={on}")


def _app(**params) -> AppTest:
    at = AppTest.from_function(_script, default_timeout=30)
    at.query_params.update(params)
    return at.run()


def test_link_sets_the_widgets_and_the_widgets_write_the_link():
    at = _app(t="250", block="c", ts=["2", "3"], on="1")
    assert not at.exception, f"no exception: {at.exception}"
    assert at.markdown[0].value == "t=250 block=c ts=[2, 3] on=True", "values come from the URL"
    at.slider(key="p_t").set_value(40).run()
    at.selectbox(key="p_block").set_value("a").run()
    assert at.markdown[0].value.startswith("t=40 block=a"), "the user's change wins over the URL"
    assert at.query_params["t"] == "40" and at.query_params["block"] == "a", (
        "the URL follows the widgets"
    )
    assert at.query_params["ts"] == ["2", "3"], "multiselects use repeated parameters"


def test_defaults_are_written_and_bad_values_fall_back_with_a_notice():
    at = _app()
    assert at.markdown[0].value == "t=100 block=b ts=[1] on=False", "defaults without a URL"
    assert at.query_params["t"] == "100", "defaults are written so the link is complete"
    at = _app(t="5000", block="zzz", ts=["9"], on="maybe")
    assert not at.exception, f"a bad link never raises: {at.exception}"
    assert at.markdown[0].value == "t=100 block=b ts=[1] on=False", (
        "invalid values fall back to defaults"
    )
    assert len(at.toast) >= 1 and "Ignored" in at.toast[0].value, (
        "the user is told the link was partly ignored"
    )


def test_merge_tables_keeps_the_latest_row_per_setting_and_metric():
    def row(t, v, pool="1"):
        return {
            "model": "m",
            "dataset": "d",
            "t": t,
            "layer": "mid_block",
            "layer_index": 7,
            "pool": pool,
            "head": "linear",
            "split": "test",
            "metric": "top1",
            "value": v,
        }

    old = pd.DataFrame([row(10, 0.5), row(20, 0.6)], columns=COLUMNS)
    new = pd.DataFrame([row(20, 0.7), row(30, 0.8)], columns=COLUMNS)
    out = services.merge_tables(old, new)
    assert sorted(zip(out["t"], out["value"], strict=True)) == [(10, 0.5), (20, 0.7), (30, 0.8)], (
        "latest wins"
    )
    assert services.merge_tables().empty, "merging nothing gives an empty table"


def test_sweep_table_survives_an_interrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path))
    ctx = services.Context("ddpm-digits", "digits", 300, None)
    path = services.sweep_path(ctx)
    assert path.parent == tmp_path / "sweeps" and "tr300-teall" in path.name, (
        f"path names the limits: {path}"
    )
    rows = pd.DataFrame(
        [
            {
                "model": "m",
                "dataset": "d",
                "t": 5,
                "layer": "conv_in",
                "layer_index": 1,
                "pool": "2",
                "head": "linear",
                "split": "test",
                "metric": "top1",
                "value": 0.9,
            }
        ],
        columns=COLUMNS,
    )
    path.parent.mkdir(parents=True)
    rows.to_csv(services.running_path(path), index=False)  # what a killed sweep leaves behind
    df = services.load_sweep(ctx)
    assert len(df) == 1 and df["pool"].iloc[0] == "2", (
        "the partial rows are loaded, pools stay strings"
    )
    assert path.exists() and not services.running_path(path).exists(), (
        "partial rows are folded into the table"
    )


def test_link_value_parsers_say_what_is_wrong():
    import pytest

    from explorer.ui import state

    assert state.parse_limit("0") is None and state.parse_limit("all") is None
    assert state.parse_limit(" 300 ", 1000) == 300
    for raw, why in [
        ("-5", "negative limit -5"),
        ("lots", "not a whole number of images"),
        ("2000", "limit 2000 is over the maximum of 1000"),
        ("9" * 5000, "not a whole number of images"),
    ]:
        with pytest.raises(ValueError, match=why):
            state.parse_limit(raw, 1000)
    parse = state.whole_number(0, 999)
    assert parse("42") == 42
    with pytest.raises(ValueError, match="1000 is outside 0 to 999"):
        parse("1000")
    with pytest.raises(ValueError, match="not a whole number from 0 to 999"):
        parse("4.5")
    with pytest.raises(ValueError, match="^not a valid value$"):
        state.readable(int)("abc")
    with pytest.raises(ValueError, match="^mine$"):
        state.readable(lambda r: (_ for _ in ()).throw(ValueError("mine")))("x")
    assert state.shown(["10", "abc"]) == "10,abc"
    assert state.shown("a\x00b") == "a?b" and len(state.shown("x" * 500)) == 40


def _picker_script():
    import streamlit as st

    from explorer.ui.sidebar import Picker, _picker

    p = Picker(
        "Thing",
        "thing",
        ["a", "b", "other…"],
        "other…",
        "Path",
        "/path",
        "help",
        extra={"b": lambda: "from-b"},
    )
    st.write(f"spec={_picker(p, 'a')}")


def test_sidebar_picker_binds_to_the_link_like_the_pages():
    at = AppTest.from_function(_picker_script, default_timeout=30).run()
    assert at.markdown[0].value == "spec=a" and at.query_params["thing"] == "a", (
        "the default, linked"
    )
    at = AppTest.from_function(_picker_script, default_timeout=30)
    at.query_params["thing"] = "/data/x"
    at.run()
    assert at.selectbox(key="side_thing").value == "other…", "a path in the link selects 'other'"
    assert (
        at.text_input(key="side_thing_path").value == "/data/x"
        and at.markdown[0].value == "spec=/data/x"
    )
    at.selectbox(key="side_thing").set_value("b").run()
    assert at.markdown[0].value == "spec=from-b" and at.query_params["thing"] == "from-b", (
        "an extra option gives its own spec, and the link holds it"
    )
