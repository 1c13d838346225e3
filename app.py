"""Diffusion Feature Explorer: `streamlit run app.py`.

The entry point draws the sidebar (model, dataset, limits) and the navigation;
each page is a thin file under explorer/ui/pages. Settings live in the URL, so a copied
link reproduces the view.
"""

import os

import streamlit as st

from explorer.paths import ASSETS, cache_dir

# numba (UMAP) keeps its compiled functions in the cache root, so only a first server compiles
os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))

from explorer.ui import common, sidebar  # noqa: E402
from explorer.ui.common import PAGES, guard  # noqa: E402

# presentation mode (`?present=1` or the sidebar's toggle) opens with the sidebar collapsed
st.set_page_config(
    page_title="Diffusion Feature Explorer",
    page_icon=str(ASSETS / "icons" / "favicon.png"),  # a local file: no request leaves the app
    layout="wide",
    initial_sidebar_state="collapsed" if common.present() else "auto",
)
common.style()

pages = [
    st.Page(PAGES["explore"], title="Explore", icon=":material/search:", default=True),
    st.Page(PAGES["sweep"], title="Sweep", icon=":material/show_chart:"),
    st.Page(PAGES["compare"], title="Compare", icon=":material/compare:"),
    st.Page(PAGES["similarity"], title="Similarity", icon=":material/hub:"),
    st.Page(PAGES["data"], title="Data & model", icon=":material/dataset:"),
]
page = st.navigation(pages)
with guard():
    sidebar.render()
    with st.sidebar:
        common.presentation_toggle()
    page.run()
