"""The Semantic Gap explorer: `streamlit run app.py`.

Reads the indexes and result tables that `python -m core ...` wrote (paths from $SEMGAP_INDEXES
and $SEMGAP_RESULTS, default indexes/ and results/) and never embeds the corpus itself.
"""
import os

# The app runs offline: encoders load local weights only and never try a download.
os.environ["SEMGAP_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import streamlit as st  # noqa: E402

import ui  # noqa: E402

# Aligned models (a CNN with a trained text tower) live beside the indexes unless set otherwise.
os.environ.setdefault("SEMGAP_MODELS", str(ui.indexes_root() / ".models"))

st.set_page_config(page_title="Semantic Gap explorer", page_icon=":material/palette:", layout="wide")
ui.inject_css()

pages = {
    "pages/search.py": st.Page("pages/search.py", title="Search", icon=":material/image_search:", default=True),
    "pages/gap.py": st.Page("pages/gap.py", title="Gap", icon=":material/bar_chart:"),
    "pages/map.py": st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
    "pages/method.py": st.Page("pages/method.py", title="Method", icon=":material/school:"),
}
navigation = st.navigation(list(pages.values()))
requested = st.session_state.pop(ui.REQUESTED_PAGE_KEY, None)
if requested in pages:
    st.switch_page(pages[requested])

st.sidebar.title("Semantic Gap explorer")
ui.corpus_ui()
ui.mark_app_run()
navigation.run()
