"""Method: the study as a seminar narrative, with live figures from the result tables."""
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

import ui

ui.page_setup("pages/method.py")

PRESENTER_CSS = """<style>
[data-testid="stMain"] [data-testid="stMarkdownContainer"] p,
[data-testid="stMain"] [data-testid="stMarkdownContainer"] li { font-size: 30px; line-height: 1.4; }
[data-testid="stMain"] h2 { font-size: 46px; }
[data-testid="stMain"] h1, section[data-testid="stSidebar"] { display: none; }
[data-testid="stMain"] .sg-chip { font-size: 30px; gap: 12px; margin-right: 28px; }
[data-testid="stMain"] .sg-dot { width: 30px; height: 30px; border-width: 2px; }
</style>"""  # the slide gets the whole screen: no sidebar, no page title; colour chips grow with the text
SLIDE_CHART_HEIGHT = 430  # a chart on a slide, so that the slide fits a 1440x900 screen


@dataclass
class Study:
    """Everything the narrative quotes: the corpus table and the result tables (None when not built)."""

    corpus: str
    metadata: pd.DataFrame | None
    h1: pd.DataFrame | None
    h2: pd.DataFrame | None
    h3: pd.DataFrame | None
    chart_height: int = ui.CHART_HEIGHT  # smaller in the presenter view


def fmt_interval(row: pd.Series, digits: int = 2) -> str:
    value = f"{row['value']:.{digits}f}"
    if pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
        return value
    return f"{value} [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


def label_set_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Keep the "all" label set when present, so every sentence quotes the same labels."""
    sets = table["label_set"].astype(str)
    return table[sets == ("all" if (sets == "all").any() else sets.iloc[0])]


def gap_rows(h2: pd.DataFrame) -> pd.DataFrame:
    """Return the headline gap factors: image-to-image, the largest precision@k, pooled."""
    rows = label_set_rows(h2)
    rows = rows[(rows["task"] == "image_to_image") & (rows["group"] == "gap") & (rows["aggregation"] == "pooled")]
    ks = sorted(int(m.rsplit("@", 1)[1]) for m in rows["metric"].unique() if m.startswith("gap_err_p@"))
    return rows[rows["metric"] == f"gap_err_p@{ks[-1]}"] if ks else rows.iloc[0:0]


def question_section(study: Study) -> None:
    st.markdown(
        "Vision models are good at finding paintings that *look* alike. Do they also understand what a "
        "painting *is about*? A still life is its objects; an Annunciation is a story that the same "
        "objects could not tell. We measure how far each model's embedding space follows **meaning** "
        "rather than **surface texture**."
    )
    if study.metadata is not None:
        typed = int((study.metadata["type"].fillna("").astype(str) != "").sum())
        st.markdown(
            f"Corpus **{study.corpus}**: {len(study.metadata):,} paintings, {typed:,} of them with an art-type label."
        )


def split_section(study: Study) -> None:
    st.markdown("Art types fall into two groups by **where their meaning lies**:")
    st.markdown("- **Additive**: the meaning is in the visible objects.")
    st.html(ui.type_chips_html(ui.SPLIT.additive))
    st.markdown("- **Narrative**: the meaning is in stories, symbols and relationships.")
    st.html(ui.type_chips_html(ui.SPLIT.narrative))
    if study.metadata is None:
        return
    groups = study.metadata["type"].fillna("").astype(str).map(ui.SPLIT.group)
    st.markdown(
        f"In this corpus: {int((groups == 'additive').sum()):,} additive and {int((groups == 'narrative').sum()):,} "
        "narrative paintings; the rest are studies, other types or untyped, and stay out of group figures."
    )
    table = study.metadata[["type"]].assign(n=1).groupby("type", as_index=False)["n"].sum()
    figure = ui.style_figure(ui.type_counts_figure(study.metadata), "Paintings per art type",
                             f"corpus {study.corpus} · n = {len(study.metadata):,}", height=study.chart_height)
    ui.show_figure(figure, table, "type-counts", "method-types")


def structure_section(study: Study) -> None:
    st.markdown(
        "**H1: does the space have structure?** For each attribute we divide the mean cosine distance "
        "between paintings of the same class by the mean distance between classes. Lower means more "
        "structure; about **1.0** means none. Shuffling the labels gives the baseline."
    )
    if study.h1 is None:
        ui.missing_results_info("h1_structure")
        return
    rows = label_set_rows(study.h1)
    rows = rows[rows["metric"].isin(["ratio", "shuffled_ratio"])]
    # "common" compares attributes on the same paintings, but small corpora may only have "full".
    subset = "common" if (rows["subset"] == "common").any() else "full"
    rows = rows[rows["subset"] == subset]
    if rows.empty:
        st.info("The h1_structure table has no ratio rows.")
        return
    type_rows = rows[(rows["attribute"] == "type")]
    lines = []
    for model in ui.sort_models(type_rows["model"].unique()):
        ratio = type_rows[(type_rows["model"] == model) & (type_rows["metric"] == "ratio")]
        shuffled = type_rows[(type_rows["model"] == model) & (type_rows["metric"] == "shuffled_ratio")]
        if len(ratio) and len(shuffled):
            lines.append(f"- {ui.model_name(model)}: type ratio {fmt_interval(ratio.iloc[0])}, shuffled {shuffled.iloc[0]['value']:.2f}")
    if lines:
        st.markdown("\n".join(lines))
    figure = ui.style_figure(ui.structure_figure(rows), f"H1 · structure ratio per attribute ({subset} subset)",
                             ui.footer_text(rows), height=study.chart_height)
    ui.show_figure(figure, rows, "h1-structure", "method-h1")


def gap_section(study: Study) -> None:
    st.markdown(
        "**H2: the semantic gap.** Each painting queries the corpus; precision@k is the share of its top-k "
        "with the same type. The **gap factor** divides the narrative error rate by the additive one, so "
        "above 1 means narrative paintings are retrieved worse. The reference study found **1.4× to 3.8×** "
        "for every model it tested."
    )
    if study.h2 is None:
        ui.missing_results_info("h2_retrieval")
        return
    rows = gap_rows(study.h2)
    if rows.empty:
        st.info("The h2_retrieval table has no image-to-image gap rows.")
        return
    metric = rows["metric"].iloc[0][len("gap_err_"):]
    low, high = rows.loc[rows["value"].idxmin()], rows.loc[rows["value"].idxmax()]
    if len(rows) == 1:
        st.markdown(f"Here the gap factor of {ui.metric_label(metric)} is **{fmt_interval(low)}** for {ui.model_name(low['model'])}.")
    else:
        st.markdown(
            f"Here the gap factor of {ui.metric_label(metric)} runs from **{low['value']:.2f}×** "
            f"({ui.model_name(low['model'])}) to **{high['value']:.2f}×** ({ui.model_name(high['model'])})."
        )
    figure = ui.style_figure(ui.gap_figure(rows, metric), "H2 · gap factor (image → image, pooled)", ui.footer_text(rows),
                             height=study.chart_height)
    ui.show_figure(figure, rows, "h2-gap-factor", "method-h2")


def texture_section(study: Study) -> None:
    st.markdown(
        "**H3: texture bias.** We cut each sampled painting into patches and shuffle them: the layout is "
        "gone, texture and colour stay. If the embedding barely moves (high cosine to the original), the "
        "model reads texture, not composition."
    )
    if study.h3 is None:
        ui.missing_results_info("h3_texture")
        return

    rows = label_set_rows(study.h3)
    floor = ui.texture_floor(rows)
    rows = rows[rows["perturbation"] != ui.FLOOR_PERTURBATION]
    if rows.empty:
        st.info("The h3_texture table has no perturbation rows.")
        return
    default = ui.DEFAULT_PERTURBATION
    perturbation = default if (rows["perturbation"] == default).any() else rows["perturbation"].iloc[0]
    rows = rows[(rows["perturbation"] == perturbation) & (rows["metric"] == "cosine")]
    if rows.empty:
        st.info("The h3_texture table has no cosine rows.")
        return

    label = ui.perturbation_label(perturbation)
    overall = rows[rows["type"] == "all"]
    lines = []
    for _, row in overall.iterrows():
        floor_text = f", random-pair floor {floor[row['model']]:.2f}" if row["model"] in floor else ""
        lines.append(f"- {ui.model_name(row['model'])}: cosine {fmt_interval(row)}{floor_text}")
    if lines:
        st.markdown(f"Mean cosine to the original after {label}:\n" + "\n".join(lines))

    rows, dropped = ui.split_small_types(rows)
    figure = ui.style_figure(ui.texture_figure(rows, "cosine", floor), f"H3 · cosine after {label}", ui.footer_text(rows),
                             height=study.chart_height)
    ui.show_figure(figure, rows, "h3-texture", "method-h3")
    for caption in (ui.floor_caption(floor), ui.small_types_caption(dropped)):
        if caption:
            st.caption(caption)


def conclusion_section(study: Study) -> None:
    if study.h2 is None:
        st.markdown("The conclusion needs the H2 results.")
        ui.missing_results_info("h2_retrieval")
        return
    rows = gap_rows(study.h2)
    if rows.empty:
        st.info("The h2_retrieval table has no image-to-image gap rows.")
        return
    above = rows[rows["ci_low"] > 1]
    unclear = rows[(rows["ci_low"] <= 1) & (rows["ci_high"] >= 1)]
    names = lambda part: ", ".join(ui.model_name(m) for m in ui.sort_models(part["model"]))  # noqa: E731
    lines = [f"- In **{len(above)} of {len(rows)}** models the gap factor's interval lies above 1: "
             f"narrative paintings are retrieved measurably worse ({names(above) or 'none'})."]
    if len(unclear):
        lines.append(f"- Not distinguishable from no gap: {names(unclear)}.")
    inside = rows[(rows["value"] >= ui.REFERENCE_GAP[0]) & (rows["value"] <= ui.REFERENCE_GAP[1])]
    lines.append(f"- {len(inside)} of {len(rows)} point estimates fall inside the reference range "
                 f"{ui.REFERENCE_GAP[0]}×–{ui.REFERENCE_GAP[1]}×.")
    if study.h3 is not None:
        h3 = label_set_rows(study.h3)
        overall = h3[(h3["type"] == "all") & (h3["perturbation"] == ui.DEFAULT_PERTURBATION) & (h3["metric"] == "cosine")]
        if len(overall):
            lines.append(texture_conclusion(overall, ui.texture_floor(h3)))
    st.markdown("\n".join(lines))
    st.markdown("Every number above is read live from the result tables; rebuild them with "
                f"`{ui.EVALUATE_COMMAND}` after changing the corpus or the models.")


def texture_conclusion(overall: pd.DataFrame, floor: dict[str, float]) -> str:
    """Name the model that relies most on texture, comparing models above their own floors when known.

    Reliance above the floor is (cosine - floor) / (1 - floor): the share of the distance from a random
    pair to an identical copy that survives the patch shuffles, as in `python -m core report`.
    """
    floors = overall["model"].map(floor)
    if floors.notna().all():
        reliance = (overall["value"] - floors) / (1 - floors)
        top = overall.loc[reliance.idxmax()]
        return (f"- The strongest texture reliance above the random-pair floor: {ui.model_name(top['model'])} "
                f"(cosine {top['value']:.2f} after patch shuffling, floor {floor[top['model']]:.2f}, "
                f"reliance above floor {reliance.max():.2f}).")
    top = overall.loc[overall["value"].idxmax()]
    return f"- The strongest texture reliance: {ui.model_name(top['model'])} (cosine {top['value']:.2f} after patch shuffling)."


SECTIONS = [
    ("The question", question_section),
    ("Additive and narrative art", split_section),
    ("H1 · Structure", structure_section),
    ("H2 · The semantic gap", gap_section),
    ("H3 · Texture bias", texture_section),
    ("Conclusion", conclusion_section),
]


def move_slide(step: int) -> None:
    st.session_state["method_slide"] = int(np.clip(st.session_state.get("method_slide", 0) + step, 0, len(SECTIONS) - 1))


def presenter_ui() -> bool:
    """Draw the presenter toggle and, when on, the slide controls, and return whether it is on."""
    # The toggle and the slide controls share one row, so a slide keeps most of a 1440x900 screen.
    switch, previous, position, following = st.columns([1.4, 1, 1, 1], vertical_alignment="center")
    presenter = switch.toggle("Presenter view", key="method_presenter", help="One section at a time, in large type.")
    if presenter:
        st.html(PRESENTER_CSS)
        slide = st.session_state.get("method_slide", 0)
        previous.button("◀ Previous", on_click=move_slide, args=(-1,), width="stretch", disabled=slide == 0)
        following.button("Next ▶", on_click=move_slide, args=(1,), width="stretch", disabled=slide == len(SECTIONS) - 1)
        position.markdown(f"Slide {slide + 1} of {len(SECTIONS)}")
    return presenter


corpus = ui.require_corpus()
study = Study(corpus, ui.load_corpus_table(corpus), *(ui.load_table(corpus, n) for n in ("h1_structure", "h2_retrieval", "h3_texture")))
st.title("How the study works")
if presenter_ui():
    study.chart_height = SLIDE_CHART_HEIGHT
    title, draw = SECTIONS[st.session_state.get("method_slide", 0)]
    st.header(title)
    draw(study)
else:
    for title, draw in SECTIONS:
        st.header(title)
        draw(study)
