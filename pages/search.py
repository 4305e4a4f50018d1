"""Search: ask several models the same query and compare their top-k side by side."""
import streamlit as st

import ui

ui.page_setup("pages/search.py")


def options_ui(models: list[str], options: dict[str, list[str]]) -> tuple[list[str], int, dict[str, list[str]]]:
    """Draw the sidebar settings and return the chosen models, k and filters."""
    # Drop remembered values that this corpus does not offer, which Streamlit would reject.
    remembered = st.session_state.get("search_models")
    if remembered is None or (remembered and not set(remembered) & set(models)):
        st.session_state["search_models"] = ui.default_models(models)
    else:
        st.session_state["search_models"] = [m for m in remembered if m in models]
    st.session_state.setdefault("search_k", ui.DEFAULT_K)
    for column, values in options.items():
        key = f"search_filter_{column}"
        st.session_state[key] = [v for v in st.session_state.get(key, []) if v in values]

    with st.sidebar:
        chosen = st.multiselect("Models", models, key="search_models", format_func=ui.short_model_name)
        k = st.slider("Top-k", *ui.K_RANGE, key="search_k")
        with st.expander("Filters", expanded=any(st.session_state.get(f"search_filter_{c}") for c in options)):
            filters = {
                column: st.multiselect(ui.FILTER_LABELS[column], values, key=f"search_filter_{column}")
                for column, values in options.items()
            }
    return ui.sort_models(chosen), k, filters


def painting_ui(metadata) -> ui.Query | None:
    """Draw the painting finder and the random button, and return the chosen painting as a query."""
    all_ids = set(metadata["id"])
    if st.session_state.get("search_painting") not in all_ids:
        st.session_state["search_painting"] = None
    finder, picker, lucky = st.columns([2, 4, 1.6], vertical_alignment="bottom")
    text = finder.text_input("Find by title or artist", key="search_finder", placeholder="e.g. Rembrandt, Venus")
    matches = ui.find_paintings(metadata, text)
    ids = list(matches["id"])
    current = st.session_state["search_painting"]
    if current and current not in ids:
        ids.insert(0, current)
    labels = {row.id: ui.painting_label(row._asdict()) for row in metadata[metadata["id"].isin(ids)].itertuples(index=False)}
    choice = picker.selectbox(
        "Painting", ids, index=None, key="search_painting",
        help=f"Lists the first {ui.FINDER_LIMIT} paintings that match the finder; type there to narrow the list.",
        format_func=lambda corpus_id: labels.get(corpus_id, corpus_id), placeholder="Choose a painting",
    )
    lucky.button("Random", on_click=ui.pick_random_painting, args=(sorted(all_ids),), icon=":material/casino:")
    return ui.painting_query(metadata, choice) if choice else None


def text_ui() -> ui.Query | None:
    text = st.text_input("Describe a painting", key="search_text", placeholder="e.g. the judgement of Paris")
    return ui.Query("text", text.strip(), text=text.strip()) if text.strip() else None


def upload_ui(types: list[str]) -> ui.Query | None:
    """Draw the uploader, and return the decoded upload as a query or show why it cannot be used."""
    upload, art_type = st.columns([3, 2], vertical_alignment="bottom")
    file = upload.file_uploader(
        f"Upload a painting: JPEG, PNG, WebP or TIFF, up to {ui.MAX_UPLOAD_MB} MB",
        type=list(ui.UPLOAD_EXTENSIONS), max_upload_size=ui.MAX_UPLOAD_MB, key="search_upload",
    )
    chosen_type = art_type.selectbox(
        "Its art type, if known (marks results of that type)", [""] + types, key="search_upload_type",
        format_func=lambda t: t or "not given",
    )
    if file is None:
        return None
    try:
        image = ui.decode_upload(file.name, file.getvalue())
    except ui.UploadError as error:
        st.error(str(error))
        st.stop()
    details = [f"{image.width} × {image.height} pixels"] + ([f"type: {chosen_type}"] if chosen_type else [])
    return ui.Query("upload", file.name, image=image, type=chosen_type, details=details)


def results_header_ui(query: ui.Query, k: int, mode: str, credit: str, answers: list[ui.ModelAnswer]) -> None:
    """Draw the query preview beside the results heading, and the PNG download of the grid."""
    widths = [1, 4, 1.3] if query.image is not None else [4, 1.3]
    columns = st.columns(widths, vertical_alignment="bottom")
    if query.image is not None:
        columns[0].image(query.image, width=140)
    header, export = columns[-2:]
    header.markdown(f"**Query: {query.label}**" + (f" · {' · '.join(query.details)}" if query.details else ""))
    header.subheader(f"Top-{k} of each model")
    if mode == "upload":
        header.caption("An uploaded image cannot be put in a link: the page URL keeps only the models, k and filters.")
    else:
        header.caption("This query is in the page URL: copy the address into a slide to come back to it.")
    export.download_button(
        "Results as PNG", data=lambda: ui.compose_result_grid(query, answers, k, credit),
        file_name="semantic-gap-results.png", mime="image/png", icon=":material/download:", on_click="ignore",
        help="The query and every model's top-k in one image, for slides.",
    )


corpus = ui.require_corpus()
indexes = ui.require_indexes(corpus)
metadata = ui.load_corpus_table(corpus)
options = ui.filter_options(metadata)
ui.apply_search_params(list(indexes), options, set(metadata["id"]))

st.title("Search")
if st.session_state.get(ui.SEARCH_PARAMS_WARNING_KEY):
    st.warning("The link's " + "; ".join(st.session_state.pop(ui.SEARCH_PARAMS_WARNING_KEY)) + " could not be used; the defaults apply.")
models, k, filters = options_ui(list(indexes), options)
mode = st.radio("Query by", ui.SEARCH_MODES, format_func=ui.MODE_LABELS.get, horizontal=True, key="search_mode")
if mode == "painting":
    query = painting_ui(metadata)
elif mode == "text":
    query = text_ui()
else:
    query = upload_ui(options.get("type", []))
ui.write_search_params(query, models, k, filters)

if query is None:
    st.info({
        "painting": "Choose a painting from the corpus, or press **Random**.",
        "text": "Type a description and press Enter.",
        "upload": "Upload a painting to find its neighbours in each model.",
    }[mode])
    st.stop()
if not models:
    st.info("Choose at least one model in the sidebar.")
    st.stop()
answers = ui.answer_query(query, indexes, models, k, ui.active_filters(filters))
credit = ui.corpus_credit(indexes)
results_header_ui(query, k, mode, credit, answers)
if query.type:
    st.html(
        f'<div class="sg-chip">A <span class="sg-dot" style="background:{ui.type_color(query.type)}"></span>'
        f"coloured border and ✓ mark results of the query's type, <b>{query.type}</b>.</div>"
    )
ui.show_answers(answers, query, metadata, ui.active_filters(filters), k)
st.caption(credit)
