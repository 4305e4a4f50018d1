"""Map: each model's embedding space in 2-D (UMAP or PCA), side by side. Clicking a painting shows its neighbours."""
import streamlit as st

import ui

ui.page_setup("pages/map.py")
from core.search import Searcher

SELECTED_KEY = "map_selected"
NEIGHBOURS = 6
MAP_HEIGHT = 560
METADATA_COLUMNS = ["id", "title", "artist", "type", "type_group", "school", "timeframe", "style", "image_path"]


def settings_ui(projections) -> tuple[str, str, list[str]]:
    """Draw the sidebar settings and return the projection method, colour column and models."""
    methods = [m for m in ("umap", "pca") if m in set(projections["method"])] or sorted(projections["method"].unique())
    models = ui.sort_models(projections["model"].unique())
    with st.sidebar:
        method = st.radio("Projection", methods, horizontal=True, key="map_method", format_func=str.upper)
        color_by = st.selectbox("Colour by", list(ui.COLOR_COLUMNS), format_func=ui.COLOR_COLUMNS.get, key="map_color")
        chosen = st.multiselect("Models", models, default=models, format_func=ui.short_model_name, key="map_models")
    return method, color_by, ui.sort_models(chosen)


def remember_selection(chart_key: str) -> None:
    """Chart callback: keep the clicked painting, so every map and the neighbour list follow it."""
    corpus_id = ui.selected_point_id(st.session_state.get(chart_key))
    if corpus_id:
        st.session_state[SELECTED_KEY] = corpus_id


def finder_ui(metadata) -> None:
    """Let the user find a painting by title or artist instead of clicking it."""
    finder, picker = st.columns([2, 4], vertical_alignment="bottom")
    text = finder.text_input("Find a painting", key="map_finder", placeholder="title or artist")
    if not text.strip():
        return
    matches = ui.find_paintings(metadata, text)
    labels = {row.id: ui.painting_label(row._asdict()) for row in matches.itertuples(index=False)}
    choice = picker.selectbox(f"{len(matches)} matches", list(labels), index=None, format_func=labels.get,
                              key="map_pick", placeholder="Choose one to mark it on every map")
    if choice:
        st.session_state[SELECTED_KEY] = choice


def maps_ui(projections, metadata, method: str, color_by: str, models: list[str], selected: str) -> None:
    """Draw the shared legend, then one map per model, two per row."""
    shown = metadata[metadata["id"].isin(projections["id"])]
    st.html(ui.category_chips_html(color_by, ui.map_categories(shown, color_by)))
    for start in range(0, len(models), 2):
        for column, model in zip(st.columns(min(2, len(models))), models[start : start + 2]):
            rows = projections[(projections["model"] == model) & (projections["method"] == method)]
            points = rows[["id", "x", "y"]].merge(metadata.reindex(columns=METADATA_COLUMNS, fill_value=""), on="id", how="left")
            title = f"{ui.model_name(model)} · {method.upper()}"
            footer = ui.footer_text(rows.assign(n=len(rows)), [method.upper()], width=ui.HALF_FOOTER_CHARS)
            figure = ui.style_figure(ui.projection_figure(points, color_by, selected, legend=False), title, footer,
                                     height=MAP_HEIGHT, tick_space=10)
            # The download carries its own legend, because the page's shared legend stays behind.
            export = ui.style_figure(ui.projection_figure(points, color_by, selected), title, footer,
                                     height=MAP_HEIGHT, tick_space=10).update_layout(width=ui.EXPORT_WIDTH)
            chart_key = f"map-{model}-{method}"
            with column:
                ui.show_figure(figure, rows, f"map-{model}-{method}-{color_by}", chart_key,
                               on_select=lambda key=chart_key: remember_selection(key), export_fig=export)


def neighbours_ui(corpus: str, metadata, selected: str) -> None:
    """Show the selected painting and its nearest neighbours in every built model."""
    row = metadata.loc[metadata["id"] == selected]
    if row.empty:
        st.warning(f"The selected painting {selected!r} is not in the corpus table.")
        return
    row = row.iloc[0]
    st.subheader("Selected painting and its neighbours")
    picture, neighbours = st.columns([1, 4])
    with picture:
        uri = ui.thumbnail_uri(str(row["image_path"]))
        if uri:
            st.html(f'<img src="{uri}" style="width:100%;border:4px solid {ui.type_color(str(row["type"]))};border-radius:6px">')
        st.markdown(f"**{row['title'] or row['id']}**")
        st.caption(" · ".join(ui.query_details(row)))
    indexes, problems = ui.load_indexes(corpus)
    with neighbours:
        if not indexes:
            st.info(f"Neighbours need the indexes of `{corpus}`. Build them with `{ui.EMBED_COMMAND}`.")
            return
        for model in ui.sort_models(indexes):
            st.markdown(f"**{ui.model_name(model)}** — the {NEIGHBOURS} nearest paintings")
            try:
                hits = Searcher(indexes[model]).by_id(selected, NEIGHBOURS).hits
            except KeyError as error:
                st.warning(str(error.args[0]))
                continue
            st.html(ui.result_cards_html(hits, str(row["type"] or "")))
        st.caption(ui.corpus_credit(indexes))


corpus = ui.require_corpus()
st.title("Map of each model's space")
projections = ui.load_table(corpus, "projections")
if projections is None:
    ui.missing_results_info("projections")
    st.stop()
metadata = ui.load_corpus_table(corpus)
if metadata is None:
    st.info(f"The map needs the corpus table of `{corpus}`, written by `{ui.EMBED_COMMAND}`.")
    st.stop()

method, color_by, models = settings_ui(projections)
if not models:
    st.info("Choose at least one model in the sidebar.")
    st.stop()
st.caption("Hover a point for its title, artist and type; click it (or find it below) to see its neighbours in every model. "
           "Where points overlap, a click picks the top-most one; **Find a painting** selects an exact one.")
finder_ui(metadata)
selected = st.session_state.get(SELECTED_KEY, "")
maps_ui(projections, metadata, method, color_by, models, selected)
if selected:
    neighbours_ui(corpus, metadata, selected)
