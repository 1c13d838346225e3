"""Diffusion Feature Explorer: `streamlit run app.py`.

The entry point draws the sidebar (model, dataset, limits, device) and the navigation;
each page is a thin file under explorer/ui/pages. Settings live in the URL, so a copied
link reproduces the view.
"""

import streamlit as st

from explorer.ui import sidebar
from explorer.ui.common import PAGES, guard

st.set_page_config(
    page_title="Diffusion Feature Explorer", page_icon=":material/biotech:", layout="wide"
)

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
    page.run()
