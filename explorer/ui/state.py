"""Page settings <-> the URL query string, so that a copied link restores the view.

Every setting is a widget with a page-prefixed key (`explore_t`) and a short URL name
(`t`). Before the widget is drawn, `seed` puts a valid value in session state, taken from
the first of:

1. the live widget (the user just changed it);
2. the URL (a shared link, or `st.switch_page(..., query_params=...)`);
3. the value this session last had on that page (Streamlit forgets widgets of other pages);
4. the default.

After the widget, `publish` writes the value back to the URL and remembers it. Streamlit
clears the query string on a page switch; each page writes its own settings back on its
first run, so the address bar always describes what is on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

_KEPT = "_kept::"  # session-state prefix of remembered values
_WARNED = "_url_warned"


def parse_bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def parse_limit(raw: str, most: int | None = None) -> int | None:
    """A train/test image limit: a positive integer (at most `most`), or 0/`all` for no limit."""
    v = raw.strip().lower()
    if v in ("", "0", "all", "none"):
        return None
    try:
        n = int(v)
    except ValueError:
        raise ValueError("not a whole number of images") from None
    if n < 0:
        raise ValueError(f"negative limit {n}")
    if most is not None and n > most:
        raise ValueError(f"limit {n} is over the maximum of {most}")
    return n


def whole_number(lo: int, hi: int) -> Callable[[str], int]:
    """A parser of integers in `[lo, hi]` whose errors read well in a notice."""

    def parse(raw: str) -> int:
        try:
            n = int(raw.strip())
        except ValueError:
            raise ValueError(f"not a whole number from {lo} to {hi}") from None
        if not lo <= n <= hi:
            raise ValueError(f"{n} is outside {lo} to {hi}")
        return n

    return parse


def readable(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` with Python's own conversion errors ("invalid literal...") said plainly."""

    def wrapped(raw: str) -> Any:
        try:
            return parse(raw)
        except (TypeError, ValueError) as e:
            python_said = "invalid literal" in str(e) or "could not convert" in str(e)
            if isinstance(e, TypeError) or python_said:
                raise ValueError("not a valid value") from None
            raise

    return wrapped


def to_url(value: Any) -> str | list[str]:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return "" if value is None else str(value)


def shown(raw: Any, most: int = 40) -> str:
    """A link value as the user typed it (repeated values joined by commas), cut to `most` chars."""
    text = ",".join(str(r) for r in raw) if isinstance(raw, list | tuple) else str(raw)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= most else text[: most - 1] + "…"


def _warn_once(name: str, raw: Any, why: str) -> None:
    warned = st.session_state.setdefault(_WARNED, set())
    if (name, str(raw)) not in warned:
        warned.add((name, str(raw)))
        why = why if len(why) <= 120 else why[:119] + "…"
        st.toast(f"Ignored `{name}={shown(raw)}` from the link: {why}. Using the default instead.")


def _ok(value: Any, valid: Callable[[Any], bool] | None, multi: bool) -> bool:
    if valid is None:
        return True
    try:
        return all(valid(v) for v in value) if multi else bool(valid(value))
    except (TypeError, ValueError):
        return False


def seed(
    key: str,
    name: str,
    default: Any,
    *,
    parse: Callable[[str], Any] = str,
    valid: Callable[[Any], bool] | None = None,
    multi: bool = False,
) -> None:
    """Put a valid value for widget `key` into session state (see the module docstring)."""
    ss = st.session_state
    if key in ss:  # a live widget; invalid when its choices changed (another model): reset it
        if not _ok(ss[key], valid, multi):
            ss[key] = default
        return
    if name in st.query_params:
        raw = st.query_params.get_all(name) if multi else st.query_params[name]
        try:
            read = readable(parse)
            value = [read(r) for r in raw if r != ""] if multi else read(raw)
            if not _ok(value, valid, multi):
                raise ValueError("not one of the choices here")
            ss[key] = value
            return
        except (TypeError, ValueError) as e:
            _warn_once(name, raw, str(e))
    kept = ss.get(_KEPT + key)
    ss[key] = kept if kept is not None and _ok(kept, valid, multi) else default


def kept(key: str) -> Any:
    """The value widget `key` last had in this session (None before its first `publish`)."""
    return st.session_state.get(_KEPT + key)


def link(name: str, value: Any) -> None:
    """Write `value` into the URL under `name` (only when it differs, so no extra rerun)."""
    url = to_url(value)
    current = st.query_params.get_all(name) if isinstance(url, list) else st.query_params.get(name)
    if current != url:
        st.query_params[name] = url


def publish(key: str, name: str, value: Any = None) -> Any:
    """Remember widget `key`'s value, write it (or `value` when given, e.g. the path typed
    under an "other…" choice) into the URL under `name`, and return what was written."""
    st.session_state[_KEPT + key] = st.session_state.get(key)
    value = st.session_state.get(key) if value is None else value
    link(name, value)
    return value


def remember(key: str, value: Any) -> None:
    """Make `value` what the widget `key` shows next time its page opens (e.g. before a page switch)."""
    st.session_state[_KEPT + key] = value
    if key in st.session_state:
        del st.session_state[key]


@dataclass(frozen=True)
class Bound:
    """A widget factory bound to one URL parameter."""

    key: str
    name: str
    default: Any
    parse: Callable[[str], Any] = str
    valid: Callable[[Any], bool] | None = None
    multi: bool = False

    def __call__(self, widget: Callable[..., Any], label: str, **kw) -> Any:
        seed(
            self.key, self.name, self.default, parse=self.parse, valid=self.valid, multi=self.multi
        )
        widget(label, key=self.key, **kw)
        return publish(self.key, self.name)


def choice(
    key: str, name: str, options: Sequence[Any], default: Any, *, parse: Callable[[str], Any] = str
) -> Bound:
    """A single choice among `options` (selectbox, radio, segmented control)."""
    opts = list(options)
    return Bound(key, name, default if default in opts else opts[0], parse, lambda v: v in opts)


def choices(
    key: str,
    name: str,
    options: Sequence[Any],
    default: Sequence[Any],
    *,
    parse: Callable[[str], Any] = str,
) -> Bound:
    """Several choices among `options` (multiselect); repeated URL parameters."""
    opts = list(options)
    return Bound(
        key, name, [d for d in default if d in opts], parse, lambda v: v in opts, multi=True
    )


def integer(key: str, name: str, default: int, lo: int, hi: int) -> Bound:
    """An integer in `[lo, hi]` (slider, number input)."""
    return Bound(
        key, name, default, whole_number(lo, hi), lambda v: isinstance(v, int) and lo <= v <= hi
    )


def flag(key: str, name: str, default: bool) -> Bound:
    return Bound(key, name, default, parse_bool, lambda v: isinstance(v, bool))
