"""AppTest checks of every page, against small artefacts built by tests/app_fixtures.py.

AppTest runs app.py in this process, so replacing core.encoders.create_encoder with the fixture's
fake reaches the app: ui.py looks the function up at call time.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import streamlit as st
from PIL import Image
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

import core.encoders
import ui
from core.search import Searcher
from core.index import load_model_index
from core.types import GROUP_COLORS, TYPE_COLORS
from tests import app_fixtures

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 60
QUERY_ID = "images/religious-26.png"  # a religious painting of the fixture corpus


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> app_fixtures.FixturePaths:
    return app_fixtures.build_fixture(tmp_path_factory.mktemp("app"))


def _navigation_mode_only(monkeypatch) -> None:
    """Make AppTest run the app as a server does after its first script run.

    AppTest resets Streamlit's pages-folder switch before every run, and with a pages/ folder
    each run then starts in pages-folder mode, which resets widget values set by the test.
    A server leaves that mode for good once app.py calls st.navigation; that path has its own
    test below (test_page_run_without_app_goes_through_app).
    """
    original_init = PagesManager.__init__

    def init_in_navigation_mode(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_in_navigation_mode)


def _use_artefacts(monkeypatch, indexes: Path, results: Path, navigation_mode: bool = True) -> None:
    if navigation_mode:
        _navigation_mode_only(monkeypatch)
    monkeypatch.setenv("SEMGAP_INDEXES", str(indexes))
    monkeypatch.setenv("SEMGAP_RESULTS", str(results))
    # app.py sets both, so registering them here restores the environment after each test.
    monkeypatch.setenv("SEMGAP_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SEMGAP_MODELS", str(indexes / ".models"))
    monkeypatch.setattr(core.encoders, "create_encoder", app_fixtures.fake_create_encoder)
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def app_env(built, monkeypatch):
    _use_artefacts(monkeypatch, built.indexes, built.results)
    yield built
    st.cache_resource.clear()
    st.cache_data.clear()


def run_app(page: str | None = None, query_params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if query_params:
        at.query_params = dict(query_params)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def html_texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in at.get("html"))


def png(color=(200, 30, 30), size=48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Missing and stale artefacts


@pytest.mark.parametrize("page", [None, "pages/gap.py", "pages/map.py", "pages/method.py"])
def test_empty_folders_name_build_command(tmp_path, monkeypatch, page):
    (tmp_path / "indexes").mkdir()
    (tmp_path / "results").mkdir()
    _use_artefacts(monkeypatch, tmp_path / "indexes", tmp_path / "results")
    at = run_app(page)
    assert "python -m core embed --corpus PATH --models effnet-lite0" in texts(at.info)


def test_results_missing_name_commands(built, tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    _use_artefacts(monkeypatch, built.indexes, tmp_path / "results")
    gap = run_app("pages/gap.py")
    assert "python -m core evaluate --indexes indexes/ --out results/" in texts(gap.info)
    map_page = run_app("pages/map.py")
    assert "python -m core project --indexes indexes/ --out results/" in texts(map_page.info)
    method = run_app("pages/method.py")
    assert "python -m core evaluate --indexes indexes/ --out results/" in texts(method.info)
    assert method.get("plotly_chart"), "the corpus chart needs no results and should still show"


def test_stale_index_warns_and_others_work(built, tmp_path, monkeypatch):
    indexes = tmp_path / "indexes"
    shutil.copytree(built.indexes, indexes)
    manifest_path = indexes / app_fixtures.CORPUS / "resnet50" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    _use_artefacts(monkeypatch, indexes, built.results)

    at = run_app(query_params={"query": f"id:{QUERY_ID}", "models": "effnet-lite0,clip-vit-b-32"})
    warnings = texts(at.warning)
    assert "resnet50" in warnings
    assert "python -m core embed" in warnings
    assert [m.label for m in at.metric] == ["precision@10", "precision@10"]


def test_page_run_without_app_goes_through_app(built, monkeypatch):
    _use_artefacts(monkeypatch, built.indexes, built.results, navigation_mode=False)
    for page in ("pages/gap.py", "pages/map.py", "pages/method.py"):
        at = run_app(page)
        assert [t.value for t in at.sidebar.title] == ["Semantic Gap explorer"], f"{page} ran without app.py"
        assert at.session_state[ui.ACTIVE_CORPUS_KEY] == app_fixtures.CORPUS


def test_corpus_selector_with_two_corpora(built, tmp_path, monkeypatch):
    indexes = tmp_path / "indexes"
    shutil.copytree(built.indexes / app_fixtures.CORPUS, indexes / app_fixtures.CORPUS)
    shutil.copytree(built.indexes / app_fixtures.CORPUS, indexes / "second-corpus")
    _use_artefacts(monkeypatch, indexes, built.results)
    at = run_app(query_params={"corpus": "second-corpus", "query": f"id:{QUERY_ID}"})
    assert at.sidebar.selectbox(key="corpus_choice").options == [app_fixtures.CORPUS, "second-corpus"]
    assert at.session_state[ui.ACTIVE_CORPUS_KEY] == "second-corpus"
    assert at.query_params["corpus"] == "second-corpus"


def test_corpora_come_from_indexes_only(built, tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(built.results / app_fixtures.CORPUS, results / app_fixtures.CORPUS)
    shutil.copytree(built.results / app_fixtures.CORPUS, results / f"{app_fixtures.CORPUS}-curated")
    _use_artefacts(monkeypatch, built.indexes, results)
    assert ui.list_corpora() == [app_fixtures.CORPUS]
    at = run_app("pages/gap.py")
    assert not [box for box in at.sidebar.selectbox if box.key == "corpus_choice"], "one corpus needs no selector"


# ---------------------------------------------------------------------------------------------
# Search


def test_corpus_query_shows_columns_and_precision(app_env):
    at = run_app(query_params={"query": f"id:{QUERY_ID}", "models": "effnet-lite0,clip-vit-b-32", "k": "5"})
    assert "EfficientNet-Lite0" in texts(at.subheader)
    assert "CLIP ViT-B/32" in texts(at.subheader)
    assert [m.label for m in at.metric] == ["precision@5", "precision@5"]

    for metric, model in zip(at.metric, ["effnet-lite0", "clip-vit-b-32"]):
        index = load_model_index(app_env.indexes / app_fixtures.CORPUS / model)
        hits = Searcher(index).by_id(QUERY_ID, 5).hits
        expected = (hits["type"] == "religious").mean()
        assert metric.value == f"{expected:.2f}"
    cards = html_texts(at)
    assert "sg-card" in cards
    assert "✓" in cards, "hits of the query's type carry a check mark"
    assert TYPE_COLORS["religious"] in cards


def test_default_models_fall_back_to_first_two(app_env):
    at = run_app()
    # resnet50 and clip-vit-b-32 are both built, so they are the default pair.
    assert at.multiselect(key="search_models").value == ["resnet50", "clip-vit-b-32"]
    assert ui.default_models(["effnet-lite0", "clip-vit-b-32", "zeta"]) == ["effnet-lite0", "clip-vit-b-32"]


def test_random_painting_button_queries(app_env):
    at = run_app(query_params={"models": "effnet-lite0,clip-vit-b-32"})
    assert "Choose a painting" in texts(at.info)
    at.button[0].click().run()
    assert not at.exception
    assert at.selectbox(key="search_painting").value is not None
    assert "Top-10 of each model" in texts(at.subheader)


def test_text_query_names_models_with_text_tower(app_env):
    at = run_app(query_params={"query": "text:a religious painting", "models": "effnet-lite0,clip-vit-b-32"})
    info = texts(at.info)
    assert "effnet-lite0 has no text tower" in info
    assert "Models that can: clip-vit-b-32" in info
    assert "EfficientNet-Lite0" in texts(at.subheader), "the column stays, with the message"
    assert "religious" in html_texts(at)


def test_unavailable_encoder_reports_reason(app_env):
    at = run_app()
    at.radio(key="search_mode").set_value("upload").run()
    at.multiselect(key="search_models").set_value(["effnet-lite0", "resnet50"]).run()
    at.file_uploader[0].upload("red.png", png(), "image/png").run()
    assert not at.exception
    warning = texts(at.warning)
    assert "resnet50 encoder is unavailable" in warning
    assert "No weights found" in warning
    assert "sg-card" in html_texts(at), "effnet-lite0 still answers"


def test_upload_valid_png_answers(app_env):
    at = run_app()
    at.radio(key="search_mode").set_value("upload").run()
    at.multiselect(key="search_models").set_value(["effnet-lite0", "clip-vit-b-32"]).run()
    at.file_uploader[0].upload("painting.png", png(app_fixtures.type_rgb("religious")), "image/png").run()
    assert not at.exception
    assert not at.error
    assert html_texts(at).count("sg-card") >= 2 * ui.DEFAULT_K
    assert "cannot be put in a link" in texts(at.caption)
    assert "query" not in at.query_params


def test_upload_corrupt_bytes_shows_error_and_page_works(app_env):
    at = run_app()
    at.radio(key="search_mode").set_value("upload").run()
    at.file_uploader[0].upload("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png").run()
    assert not at.exception
    assert "broken.png could not be read" in texts(at.error)
    assert "damaged or incomplete" in texts(at.error)

    at.radio(key="search_mode").set_value("text").run()
    at.text_input(key="search_text").input("a religious painting").run()
    assert not at.exception
    assert not at.error
    assert "sg-card" in html_texts(at)


def test_read_upload_rejects_bad_input():
    image = ui.read_upload("ok.png", png())
    assert image.mode == "RGB"
    assert image.size == (48, 48)
    with pytest.raises(ui.UploadError, match="above the 20 MB limit"):
        ui.read_upload("big.jpg", b"\0" * (20_000_001))
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    with pytest.raises(ui.UploadError, match="GIF file. Supported formats: JPEG, PNG, WebP or TIFF"):
        ui.read_upload("anim.gif", gif.getvalue())
    with pytest.raises(ui.UploadError, match="notes.txt could not be read"):
        ui.read_upload("notes.txt", b"just text")
    with pytest.raises(ui.UploadError, match="empty"):
        ui.read_upload("empty.png", b"")


def test_upload_message_depends_on_cause():
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 40, 20)).save(jpeg, format="JPEG")
    with pytest.raises(ui.UploadError) as truncated:
        ui.read_upload("cut.jpg", jpeg.getvalue()[:200])
    assert "cut.jpg" in str(truncated.value)
    assert "damaged or incomplete; export it again from its source" in str(truncated.value)
    assert "Supported formats" not in str(truncated.value)

    with pytest.raises(ui.UploadError) as text_file:
        ui.read_upload("notes.jpg", b"just text, whatever the extension says")
    assert "notes.jpg" in str(text_file.value)
    assert "Supported formats: JPEG, PNG, WebP or TIFF" in str(text_file.value)
    assert "damaged" not in str(text_file.value)


def test_query_params_round_trip(app_env):
    params = {"query": f"id:{QUERY_ID}", "models": "effnet-lite0,clip-vit-b-32", "k": "7", "type": "religious,portrait"}
    at = run_app(query_params=params)
    assert at.radio(key="search_mode").value == "painting"
    assert at.selectbox(key="search_painting").value == QUERY_ID
    assert at.slider(key="search_k").value == 7
    assert at.multiselect(key="search_models").value == ["effnet-lite0", "clip-vit-b-32"]
    assert at.multiselect(key="search_filter_type").value == ["religious", "portrait"]
    assert at.query_params == params

    at.slider(key="search_k").set_value(4).run()
    assert at.query_params["k"] == "4"
    at.radio(key="search_mode").set_value("text").run()
    at.text_input(key="search_text").input("a portrait painting").run()
    assert at.query_params["query"] == "text:a portrait painting"


def test_query_params_ignore_invalid_values():
    state = ui.search_params_to_state(
        {"query": "id:x.png", "models": "nope,clip-vit-b-32", "k": "500", "school": "Dutch,Martian"},
        ["effnet-lite0", "clip-vit-b-32"], {"school": ["Dutch", "Flemish"]},
    )
    assert state == {
        "search_mode": "painting", "search_painting": "x.png", "search_models": ["clip-vit-b-32"],
        "search_k": 50, "search_filter_school": ["Dutch"],
    }
    query = ui.Query("text", "a saint", text="a saint")
    params = ui.search_state_to_params(query, ["clip-vit-b-32"], 5, {"type": ["religious"], "school": []})
    assert params == {"query": "text:a saint", "models": "clip-vit-b-32", "k": "5", "type": "religious"}


def test_invalid_link_params_warned(app_env):
    at = run_app(query_params={"query": "id:doesnotexist", "models": "nonsense", "k": "-5"})
    warnings = " ".join(w.value for w in at.warning)
    assert "query='id:doesnotexist' (no painting with that id in this corpus)" in warnings
    assert "models='nonsense'" in warnings
    assert "k='-5'" in warnings
    assert not at.exception


def test_filters_restrict_results(app_env):
    at = run_app(query_params={"query": f"id:{QUERY_ID}", "models": "effnet-lite0,clip-vit-b-32", "school": "Dutch"})
    index = load_model_index(app_env.indexes / app_fixtures.CORPUS / "effnet-lite0")
    dutch_titles = set(index.metadata.loc[index.metadata["school"] == "Dutch", "title"])
    other_titles = set(index.metadata["title"]) - dutch_titles
    cards = html_texts(at)
    assert any(title in cards for title in dutch_titles)
    assert not any(f">{title}<" in cards for title in other_titles)


def test_result_grid_png(app_env):
    index = load_model_index(app_env.indexes / app_fixtures.CORPUS / "effnet-lite0")
    query = ui.painting_query(index.metadata, QUERY_ID)
    answers = [
        ui.ModelAnswer("effnet-lite0", Searcher(index).by_id(QUERY_ID, 4).hits),
        ui.ModelAnswer("clip-vit-b-32", None, "clip-vit-b-32 has no text tower."),
    ]
    data = ui.compose_result_grid(query, answers, 4, ui.corpus_credit({"effnet-lite0": index}))
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    expected_width = 2 * ui.GRID_MARGIN + ui.GRID_QUERY_WIDTH + 2 * (ui.GRID_COLUMN_WIDTH + ui.GRID_MARGIN)
    assert image.width == expected_width
    assert image.height > 4 * ui.GRID_THUMB


def test_credit_names_corpus_without_path(app_env):
    index = load_model_index(app_env.indexes / app_fixtures.CORPUS / "effnet-lite0")
    credit = ui.corpus_credit({"effnet-lite0": index})
    assert f"“{app_fixtures.CORPUS}”" in credit
    assert str(app_env.root) not in credit
    assert "/" not in credit


# ---------------------------------------------------------------------------------------------
# Gap, Map, Method


def test_gap_page_renders_charts(app_env):
    at = run_app("pages/gap.py")
    assert len(at.tabs) == 5
    charts = at.get("plotly_chart")
    assert len(charts) >= 5
    spec = json.loads(charts[0].proto.spec)
    footer = spec["layout"]["annotations"][-1]["text"]
    for part in ("effnet-lite0 (", "label set all", "seed 0", "n = "):
        assert part in footer
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("CSV") == len(charts)
    assert labels.count("SVG") == len(charts)


def test_gap_page_metric_and_task_switch(app_env):
    at = run_app("pages/gap.py")
    at.selectbox(key="gap_metric").set_value("map").run()
    assert not at.exception
    at.toggle(key="gap_lift").set_value(True).run()
    assert not at.exception
    at.selectbox(key="gap_task").set_value("text_to_image:title").run()
    assert not at.exception
    assert at.selectbox(key="gap_metric").value == "medr"
    assert len(at.get("plotly_chart")) >= 4


def _chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _chart_titled(at: AppTest, start: str) -> dict:
    specs = [s for s in _chart_specs(at) if s["layout"]["title"]["text"].startswith(start)]
    assert specs, f"no chart titled {start!r}"
    return specs[0]


def test_gap_texture_leaves_out_small_types(app_env):
    h3 = _fixture_table(app_env, "h3_texture")
    rows = h3[(h3["perturbation"] == "shuffle_mean") & (h3["metric"] == "cosine")]
    small = set(rows.loc[(rows["n"] < ui.MIN_TEXTURE_N) & ~rows["type"].isin(["all", "additive", "narrative"]), "type"])
    assert small, "the fixture's H3 sample should have types below the minimum"

    at = run_app("pages/gap.py")
    spec = _chart_titled(at, "H3 · ")
    bars = [t for t in spec["data"] if t["type"] == "bar"]
    shown = {x for bar in bars for x in bar["x"]}
    assert "all" in shown
    assert not shown & small
    assert all("n = " in bar["hovertemplate"] for bar in bars)
    captions = texts(at.caption)
    assert f"fewer than {ui.MIN_TEXTURE_N} sampled paintings are left out" in captions
    for art_type in small:
        assert f"{art_type} (" in captions


def test_gap_texture_shows_floor_and_readable_names(app_env):
    h3 = _fixture_table(app_env, "h3_texture")
    floor = ui.texture_floor(h3)
    assert floor, "the fixture's h3_texture table should have random_pair rows"

    at = run_app("pages/gap.py")
    options = at.selectbox(key="gap_h3_perturbation").options
    assert "patch shuffle (mean of 2×2, 4×4, 8×8)" in options
    assert "patch shuffle 4×4" in options
    assert not any("shuffle_mean" in o or "random" in o for o in options), "the floor is no perturbation to pick"
    spec = _chart_titled(at, "H3 · ")
    assert "shuffle_mean" not in spec["layout"]["title"]["text"]
    lines = [t for t in spec["data"] if t.get("name") == "random pair (floor)"]
    assert len(lines) == len(floor)
    assert sorted(line["y"][0] for line in lines) == sorted(floor.values())
    assert "floor" in texts(at.caption)
    assert "shuffle_mean" not in texts(at.markdown)


def test_perturbation_labels_are_readable():
    assert ui.perturbation_label("shuffle_mean") == "patch shuffle (mean of 2×2, 4×4, 8×8)"
    assert ui.perturbation_label("shuffle2") == "patch shuffle 2×2"
    assert ui.perturbation_label("random_pair") == "random pair (floor)"
    assert ui.perturbation_label("grayscale") == "grayscale"


def test_gap_offers_every_label_set(built, tmp_path, monkeypatch):
    results = tmp_path / "results" / app_fixtures.CORPUS
    results.mkdir(parents=True)
    for name in ("h1_structure", "h2_retrieval", "h2_paired", "h3_texture"):
        table = pd.read_parquet(built.results / app_fixtures.CORPUS / f"{name}.parquet")
        both = pd.concat([table, table.assign(label_set="curated")], ignore_index=True)
        both.to_parquet(results / f"{name}.parquet")
    _use_artefacts(monkeypatch, built.indexes, tmp_path / "results")
    at = run_app("pages/gap.py")
    assert at.sidebar.radio(key="gap_label_set").options == ["all", "curated"]
    at.sidebar.radio(key="gap_label_set").set_value("curated").run()
    assert not at.exception
    assert "label set curated" in _chart_titled(at, "H3 · ")["layout"]["annotations"][-1]["text"]


def test_gap_sidebar_marks_h2_settings(app_env):
    at = run_app("pages/gap.py")
    assert "Retrieval settings (H2 tabs)" in texts(at.sidebar.markdown)
    assert "apply to the Per type, Additive vs narrative and Model differences tabs only" in texts(at.sidebar.caption)
    assert at.selectbox(key="gap_h3_metric").label == "Texture metric"


def test_map_page_renders_and_shows_neighbours(app_env):
    at = run_app("pages/map.py")
    assert len(at.get("plotly_chart")) == 3
    for spec in _chart_specs(at):
        footer = spec["layout"]["annotations"][-1]["text"]
        assert all(len(line) <= ui.HALF_FOOTER_CHARS + 20 for line in footer.split("<br>")), footer
    assert "top-most" in texts(at.caption)
    assert "unknown" not in html_texts(at)
    at.session_state["map_selected"] = QUERY_ID
    at.run()
    assert not at.exception
    assert "Selected painting and its neighbours" in texts(at.subheader)
    cards = html_texts(at)
    assert cards.count('class="sg-grid"') == 3, "one neighbour row per built model"


def test_map_selection_event_maps_to_id():
    event = {"selection": {"points": [{"curve_number": 0, "point_index": 3, "customdata": ["images/a.png", "A", "B", "genre"]}]}}
    assert ui.selected_point_id(event) == "images/a.png"
    assert ui.selected_point_id({"selection": {"points": []}}) == ""
    assert ui.selected_point_id(None) == ""


def test_method_page_and_presenter_view(app_env):
    at = run_app("pages/method.py")
    headers = [h.value for h in at.header]
    assert headers[:2] == ["The question", "Additive and narrative art"]
    assert len(headers) == 6
    assert "gap factor" in texts(at.markdown)
    at.toggle(key="method_presenter").set_value(True).run()
    assert [h.value for h in at.header] == ["The question"]
    assert at.button[0].disabled, "Previous is disabled on the first slide"
    assert not at.button[1].disabled
    at.button[1].click().run()
    assert [h.value for h in at.header] == ["Additive and narrative art"]
    assert not at.button[0].disabled
    for _ in range(len(headers) - 2):
        at.button[1].click().run()
    assert [h.value for h in at.header] == ["Conclusion"]
    assert at.button[1].disabled, "Next is disabled on the last slide"


# ---------------------------------------------------------------------------------------------
# Chart style


def _fixture_table(app_env, name: str) -> pd.DataFrame:
    return pd.read_parquet(app_env.results / app_fixtures.CORPUS / f"{name}.parquet")


def test_charts_are_projector_sized(app_env):
    h2 = _fixture_table(app_env, "h2_retrieval")
    rows = h2[(h2["task"] == "image_to_image") & (h2["metric"] == "p@10") & (h2["aggregation"] == "pooled")
              & ~h2["group"].isin(["additive", "narrative", "gap"])]
    fig = ui.style_figure(ui.per_type_figure(rows, "p@10", False), "title", ui.footer_text(rows))
    layout = fig.layout
    assert layout.font.size >= 18
    assert all(a.font.size >= 18 for a in layout.annotations)
    for axis in list(fig.select_xaxes()) + list(fig.select_yaxes()):
        assert axis.tickfont.size >= 18
    bars = [t for t in fig.data if t.type == "bar"]
    for bar in bars:
        assert list(bar.marker.color) == [ui.type_color(t) for t in bar.x]
    assert layout.title.pad.t == ui.MODEBAR_PX, "the title starts below the modebar icons"
    assert layout.margin.t >= 80 + ui.MODEBAR_PX


def test_gap_band_below_bars(app_env):
    h2 = _fixture_table(app_env, "h2_retrieval")
    gaps = h2[(h2["task"] == "image_to_image") & (h2["metric"] == "gap_err_p@10") & (h2["group"] == "gap")
              & (h2["aggregation"] == "pooled")]
    fig = ui.style_figure(ui.gap_figure(gaps, "p@10"), "title", ui.footer_text(gaps))
    assert [shape.layer for shape in fig.layout.shapes] == ["below", "below"]
    label = next(a for a in fig.layout.annotations if a.text == "1.0 = no gap")
    assert label.xref == "paper", "the label sits right of the plot"
    assert label.x == 1
    assert label.xanchor == "left"


def test_footer_names_checksum_label_set_n_seed(app_env):
    h1 = _fixture_table(app_env, "h1_structure")
    footer = ui.footer_text(h1[h1["model"] == "effnet-lite0"])
    sha = h1.loc[h1["model"] == "effnet-lite0", "weights_sha256"].iloc[0]
    assert f"effnet-lite0 ({sha[:12]})" in footer
    assert "label set all" in footer
    assert "seed 0" in footer
    assert "n = " in footer


@pytest.mark.skipif(not shutil.which("chromium"), reason="kaleido needs Chromium: apt-get install chromium")
def test_figure_exports_svg_and_png():
    fig = ui.style_figure(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])), "export", "footer")
    svg = ui.figure_bytes(fig.to_json(), "svg")
    assert svg.lstrip().startswith(b"<svg")
    png_bytes = ui.figure_bytes(fig.to_json(), "png")
    assert Image.open(io.BytesIO(png_bytes)).width == 2 * ui.EXPORT_WIDTH


def test_type_colours_shared_across_pages():
    assert ui.category_colors("type", ["religious", "portrait"]) == {"religious": TYPE_COLORS["religious"], "portrait": TYPE_COLORS["portrait"]}
    assert ui.type_color("mythological") == TYPE_COLORS["mythological"]
    assert ui.ordered_types(["religious", "zzz", "portrait", ""]) == ["portrait", "religious", "zzz"]
    assert np.all([c.startswith("#") for c in ui.category_colors("school", ["Dutch", "Flemish"]).values()])


def test_group_colours_differ_from_type_colours():
    groups = {GROUP_COLORS["additive"], GROUP_COLORS["narrative"]}
    assert len(groups) == 2
    type_colours = {ui.type_color(t) for t in TYPE_COLORS} | set(TYPE_COLORS.values())
    assert not groups & type_colours


def test_neutral_greys_and_untyped_label():
    greys = [ui.type_color(t) for t in ("study", "other", "")]
    levels = sorted(int(c[1:3], 16) for c in greys)
    assert len(set(greys)) == 3
    assert min(b - a for a, b in zip(levels, levels[1:])) >= 40, f"grey levels too close: {greys}"
    chips = ui.category_chips_html("type", ["portrait", ""])
    assert "untyped" in chips
    assert "unknown" not in chips
    points = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "id": ["a", "b"], "title": ["A", "B"],
                           "artist": ["", ""], "type": ["portrait", ""]})
    fig = ui.projection_figure(points, "type")
    untyped = next(t for t in fig.data if t.name == "untyped")
    assert untyped.marker.symbol != "circle"
    assert fig.data[0].name == "untyped", "untyped points lie under the typed ones"


def test_download_file_names_are_portable():
    assert ui.safe_file_name("per-type-text_to_image:title-p@10") == "per-type-text_to_image-title-pat10"

