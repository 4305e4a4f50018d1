"""Gap: per-type retrieval of every model, the additive/narrative gap, H1 structure and H3 texture."""
import streamlit as st

import ui

ui.page_setup("pages/gap.py")

TASK_NAMES = {
    "image_to_image": "Image → image, same type",
    "image_to_image_excl_artist": "Image → image, other artists only",
    "type_prompt": "Type prompt → image",
}


def task_name(task: str) -> str:
    if task in TASK_NAMES:
        return TASK_NAMES[task]
    direction, _, field = task.partition(":")
    source, target = direction.split("_to_") if "_to_" in direction else (direction, "")
    return f"{source.capitalize()} {field} → {target}".strip() if field else task


LABEL_SET_HELP = "all: every type label; curated: only catalogue and WikiArt labels, no title keywords"
H2_TABS = "Per type, Additive vs narrative and Model differences"


def label_set_ui(label_sets: list[str]) -> str:
    """Draw the label-set choice, which applies to every tab, and return it."""
    return st.sidebar.radio("Label set", label_sets, horizontal=True, key="gap_label_set", help=LABEL_SET_HELP)


def settings_ui(h2, label_set: str) -> tuple[str | None, str, str]:
    """Draw the retrieval (H2) settings in the sidebar and return the task, metric and aggregation.

    The task is None when the label set has no H2 rows.
    """
    tasks = list(dict.fromkeys(h2.loc[h2["label_set"] == label_set, "task"]))
    with st.sidebar:
        st.markdown("**Retrieval settings (H2 tabs)**")
        st.caption(f"Task, metric and group aggregation apply to the {H2_TABS} tabs only.")
        if not tasks:
            st.caption(f"No retrieval results for label set {label_set}.")
            return None, "", "pooled"
        task = st.selectbox("Task", tasks, format_func=task_name, key="gap_task")
        rows = h2[(h2["task"] == task) & (h2["label_set"] == label_set)]
        metrics = [m for m in dict.fromkeys(rows["metric"]) if not m.startswith("gap_")]
        preferred = next((m for m in ("p@10", "medr") if m in metrics), metrics[0])
        if st.session_state.get("gap_metric") not in metrics:
            st.session_state["gap_metric"] = preferred
        metric = st.selectbox("Metric", metrics, format_func=ui.metric_label, key="gap_metric")
        aggregation = st.radio("Group aggregation", ["pooled", "macro"], horizontal=True, key="gap_aggregation",
                               help="pooled: every query counts once; macro: every type counts once")
    return task, metric, aggregation


def per_type_tab(h2, task: str, metric: str) -> None:
    rows = h2[(h2["task"] == task) & (h2["metric"] == metric) & (h2["aggregation"] == "pooled")
              & ~h2["group"].isin(["additive", "narrative", "gap"])]
    if rows.empty:
        st.info(f"No per-type rows for {ui.metric_label(metric)} in task {task_name(task)}.")
        return
    can_lift = metric != "medr" and rows["baseline"].notna().all()
    show_lift = st.toggle("Show the lift over chance (value / chance)", key="gap_lift", disabled=not can_lift)
    figure = ui.per_type_figure(rows, metric, show_lift and can_lift)
    title = f"{'Lift of ' if show_lift and can_lift else ''}{ui.metric_label(metric)} per art type · {task_name(task)}"
    ui.show_figure(ui.style_figure(figure, title, ui.footer_text(rows)), rows, f"per-type-{task}-{metric}", "per-type")


def group_tab(h2, task: str, metric: str, aggregation: str) -> None:
    base = h2[(h2["task"] == task) & (h2["aggregation"] == aggregation)]
    groups = base[(base["metric"] == metric) & base["group"].isin(["additive", "narrative"])]
    gaps = base[(base["metric"] == ui.gap_metric(metric)) & (base["group"] == "gap")]
    if groups.empty or gaps.empty:
        st.info(f"No additive/narrative rows for {ui.metric_label(metric)} in task {task_name(task)}.")
        return
    st.markdown(
        "The **gap factor** compares narrative with additive types: the ratio of error rates "
        "(1 − score) for scores, the ratio of median ranks for MedR. Above 1, narrative paintings are "
        "retrieved worse. The shaded band is the range the reference study reported across its models."
    )
    title = f"Gap factor ({aggregation}) · {task_name(task)}"
    ui.show_figure(ui.style_figure(ui.gap_figure(gaps, metric), title, ui.footer_text(gaps)), gaps,
                   f"gap-factor-{task}-{metric}-{aggregation}", "gap-factor")
    title = f"{ui.metric_label(metric)}: additive vs narrative ({aggregation}) · {task_name(task)}"
    ui.show_figure(ui.style_figure(ui.group_figure(groups, metric), title, ui.footer_text(groups)), groups,
                   f"groups-{task}-{metric}-{aggregation}", "groups")


def paired_tab(paired, task: str, metric: str, aggregation: str, label_set: str) -> None:
    if paired is None:
        ui.missing_results_info("h2_paired")
        return
    rows = paired[(paired["task"] == task) & (paired["metric"] == metric) & (paired["label_set"] == label_set)
                  & ((paired["aggregation"] == aggregation) | ~paired["group"].isin(["additive", "narrative"]))]
    if rows.empty:
        st.info(
            f"No paired differences for {ui.metric_label(metric)} in task {task_name(task)}. The evaluation pairs "
            "models on precision@k and mAP for image queries and on ranks for text queries."
        )
        return
    pairs = [f"{a} − {b}" for a, b in rows[["model_a", "model_b"]].drop_duplicates().itertuples(index=False)]
    chosen = st.multiselect("Model pairs", pairs, default=pairs[:2], key="gap_pairs")
    if not chosen:
        st.info("Choose at least one model pair.")
        return
    rows = rows[(rows["model_a"] + " − " + rows["model_b"]).isin(chosen)]
    st.markdown("Each point is model a minus model b on the same queries, with a paired bootstrap 95% interval. "
                "An interval that crosses 0 means no measurable difference.")
    title = f"Paired difference in {ui.metric_label(metric)} · {task_name(task)}"
    ui.show_figure(ui.style_figure(ui.paired_figure(rows, metric), title, ui.footer_text(rows)), rows,
                   f"paired-{task}-{metric}", "paired")


def structure_tab(h1, label_set: str) -> None:
    if h1 is None:
        ui.missing_results_info("h1_structure")
        return
    h1 = h1[(h1["label_set"] == label_set) & h1["metric"].isin(["ratio", "shuffled_ratio"])]
    subsets = [s for s in ("common", "full") if s in set(h1["subset"])]
    if not subsets:
        st.info(f"No H1 rows for label set {label_set}.")
        return
    subset = st.radio("Paintings", subsets, horizontal=True, key="gap_h1_subset",
                      format_func={"common": "common: every attribute known", "full": "full: all with this attribute"}.get)
    rows = h1[h1["subset"] == subset]
    if rows.empty:
        st.info(f"No H1 rows for subset {subset} and label set {label_set}.")
        return
    st.markdown("The **structure ratio** is the mean cosine distance within a class over the mean distance "
                "between classes: lower means more structure, about 1.0 means none, as with shuffled labels.")
    title = f"H1 · structure ratio per attribute ({subset} subset)"
    ui.show_figure(ui.style_figure(ui.structure_figure(rows), title, ui.footer_text(rows)), rows, f"h1-structure-{subset}", "h1")


def texture_tab(h3, label_set: str) -> None:
    if h3 is None:
        ui.missing_results_info("h3_texture")
        return

    rows = h3[h3["label_set"] == label_set]
    if rows.empty:
        st.info(f"No H3 rows for label set {label_set}.")
        return
    floor = ui.texture_floor(rows)
    perturbations = [p for p in dict.fromkeys(rows["perturbation"]) if p != ui.FLOOR_PERTURBATION]
    if not perturbations:
        st.info(f"The h3_texture table has only random-pair rows for label set {label_set}.")
        return

    left, right = st.columns(2)
    default = ui.DEFAULT_PERTURBATION
    perturbation = left.selectbox("Perturbation", perturbations, key="gap_h3_perturbation", format_func=ui.perturbation_label,
                                  index=perturbations.index(default) if default in perturbations else 0)
    metrics = list(dict.fromkeys(rows.loc[rows["perturbation"] == perturbation, "metric"]))
    metric = right.selectbox("Texture metric", metrics, key="gap_h3_metric", format_func=ui.metric_label,
                             index=metrics.index("cosine") if "cosine" in metrics else 0)
    rows = rows[(rows["perturbation"] == perturbation) & (rows["metric"] == metric)]
    rows, dropped = ui.split_small_types(rows)
    floor = floor if metric == "cosine" else {}  # the floor is a cosine, so other metrics have none

    st.markdown("Each sampled painting is perturbed after preprocessing and compared with its original embedding. "
                "Patch shuffling destroys the layout and keeps texture and colour: a high cosine after shuffling "
                "means the model relies on texture rather than composition.")
    label = ui.perturbation_label(perturbation)
    title = f"H3 · {ui.metric_label(metric)} after {label}"
    ui.show_figure(ui.style_figure(ui.texture_figure(rows, metric, floor), title, ui.footer_text(rows)), rows,
                   f"h3-{perturbation}-{metric}", "h3")

    for caption in (ui.floor_caption(floor), ui.small_types_caption(dropped)):
        if caption:
            st.caption(caption)


corpus = ui.require_corpus()
st.title("The semantic gap")
h1, h2, paired, h3 = (ui.load_table(corpus, name) for name in ("h1_structure", "h2_retrieval", "h2_paired", "h3_texture"))
if h2 is None and h1 is None and h3 is None:
    st.info(f"No results for corpus `{corpus}` under `{ui.results_root()}`. Build them with `{ui.EVALUATE_COMMAND}`.")
    st.stop()

# Every label set in any table is offered; `core evaluate --labels curated` adds its rows to the same tables.
tables = [t for t in (h1, h2, paired, h3) if t is not None]
label_sets = sorted({ls for t in tables for ls in t["label_set"].astype(str).unique()}, key=lambda s: (s != "all", s))
label_set = label_set_ui(label_sets)
task = None
if h2 is not None:
    task, metric, aggregation = settings_ui(h2, label_set)
    h2 = h2[h2["label_set"] == label_set]

per_type, groups, differences, structure, texture = st.tabs(
    ["Per type", "Additive vs narrative", "Model differences", "H1 · structure", "H3 · texture"]
)
for tab, draw in ((per_type, lambda: per_type_tab(h2, task, metric)),
                  (groups, lambda: group_tab(h2, task, metric, aggregation)),
                  (differences, lambda: paired_tab(paired, task, metric, aggregation, label_set))):
    with tab:
        if h2 is None:
            ui.missing_results_info("h2_retrieval")
        elif task is None:
            st.info(f"No retrieval (H2) rows for label set {label_set}.")
        else:
            draw()
with structure:
    structure_tab(h1, label_set)
with texture:
    texture_tab(h3, label_set)
