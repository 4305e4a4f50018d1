"""Command line of the offline job: `python -m core <command> --help`.

This is the only module that parses arguments; every command calls the library in core/.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

logger = logging.getLogger("core")


def _comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. effnet-lite0,clip-vit-b-32")
    return items


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= I < N")
    return index, count


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("corpus")
    group.add_argument("--corpus", required=True, type=Path, help="corpus folder, or a manifest CSV file")
    group.add_argument("--name", help="corpus name used for indexes/<name>/ (default: the folder name)")
    group.add_argument("--layout", choices=("manifest", "semart", "folders"), help="force a corpus layout instead of detecting it")
    group.add_argument("--manifest", help="manifest CSV file name when the folder contains several")
    group.add_argument(
        "--column", action="append", type=_key_value, default=[], metavar="FIELD=COLUMN",
        help="name the source column of a field, e.g. --column image=IMAGE_FILE --column type=TYPE (repeatable)",
    )
    group.add_argument("--encoding", help="CSV encoding, e.g. utf-8, cp1252, cp850 (default: detected)")
    group.add_argument("--class-attribute", default="type", help="attribute filled by folder names in the folder-per-class layout")
    group.add_argument("--derive-timeframe", action="store_true", help="fill a missing timeframe from the year in 50-year bins")


def load_corpus_from_args(args: argparse.Namespace):
    from core.corpus import CorpusOptions, load_corpus

    options = CorpusOptions(
        layout=args.layout,
        manifest=args.manifest,
        columns=dict(args.column),
        encoding=args.encoding,
        class_attribute=args.class_attribute,
        derive_timeframe=args.derive_timeframe,
    )
    corpus = load_corpus(args.corpus, options)
    if args.name:
        corpus.name = args.name
    return corpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Semantic Gap explorer: the offline job.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="embed a corpus with each model into a FAISS index")
    add_corpus_options(embed)
    embed.add_argument("--models", type=_comma_list, default=["effnet-lite0"], help="comma-separated model names (see `python -m core models`)")
    embed.add_argument("--out", type=Path, default=Path("indexes"), help="folder of indexes (default: indexes/)")
    embed.add_argument(
        "--weights", action="append", type=_key_value, default=[], metavar="MODEL=PATH",
        help="local weights file or folder for a model (repeatable)",
    )
    embed.add_argument("--batch-size", type=_positive_int, default=32, help="images per forward pass (default: 32)")
    embed.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding processes (default: up to 4)")
    embed.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    embed.add_argument("--pad", action="store_true", help="letterbox images to a square instead of centre-cropping them")
    embed.add_argument("--max-megapixels", type=_positive_float, help="decompression-bomb guard: largest image accepted, in megapixels")
    embed.add_argument("--index-type", choices=("flat", "ivf", "hnsw", "auto"), default="flat", help="FAISS index type (default: flat, exact)")
    embed.add_argument("--shard", type=_shard, metavar="I/N", help="encode only shard I of N into the vector cache; rerun without it to build the index")

    search = commands.add_parser("search", help="query a built index by text, image file or corpus id")
    search.add_argument("--index", type=Path, required=True, help="corpus folder of indexes, e.g. indexes/wikiart-baroque-rococo")
    search.add_argument("--model", required=True, help="model name, a sub-folder of --index")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", type=Path, help="image file query")
    query.add_argument("--id", dest="corpus_id", help="corpus id query")
    search.add_argument("--weights", help="local weights file or folder for the model's encoder")
    search.add_argument("-k", type=_positive_int, default=10, help="number of results (default: 10)")

    align = commands.add_parser("align", help="train a text tower for an image-only CNN and register it as a model")
    align.add_argument("--index", type=Path, required=True, help="corpus folder of indexes holding the CNN's index, e.g. indexes/wikiart-baroque-rococo")
    align.add_argument("--image-model", default="effnet-lite0", help="image-only model whose index is aligned (default: effnet-lite0)")
    align.add_argument("--text-model", default="minilm", help="sentence encoder (default: minilm)")
    align.add_argument("--text-field", choices=("title", "description", "title+description"), default="title", help="text paired with each painting (default: title)")
    align.add_argument("--head", choices=("linear", "mlp"), default="linear", help="projection head (default: linear)")
    align.add_argument("--projection-dim", type=int, default=256, help="dimension of the shared space (default: 256)")
    align.add_argument("--max-epochs", type=int, default=200, help="upper bound on training epochs (default: 200)")
    align.add_argument("--seed", type=int, default=0, help="seed of training (default: 0)")
    align.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split shared by all models (default: 0)")
    align.add_argument("--resplit", action="store_true", help="replace an existing text split made with other settings")
    align.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW learning rate (default: 0.0001)")
    align.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default: 0.1)")
    align.add_argument("--patience", type=int, default=10, help="epochs without a better validation score before stopping (default: 10)")
    align.add_argument("--early-stopping", choices=("val_loss", "val_r10"), default="val_loss", help="validation score that picks the best epoch (default: val_loss)")
    align.add_argument("--hidden-dim", type=int, default=512, help="hidden width of the mlp head (default: 512)")
    align.add_argument("--batch-size", type=int, default=256, help="pairs per step (default: 256)")
    align.add_argument("--models-dir", type=Path, help="folder of trained models (default: $SEMGAP_MODELS or indexes/.models)")

    build = commands.add_parser("build", help="run the whole job: embed, align, embed the aligned models, evaluate, project")
    add_corpus_options(build)
    build.add_argument("--models", type=_comma_list, default=["effnet-lite0"], help="models to embed (default: effnet-lite0)")
    build.add_argument("--align", type=_comma_list, default=[], metavar="CNN+TEXT", help="aligned models to train and embed, e.g. effnet-lite0+minilm")
    build.add_argument("--out", type=Path, default=Path("indexes"), help="folder of indexes (default: indexes/)")
    build.add_argument("--results", type=Path, default=Path("results"), help="folder of results (default: results/)")
    build.add_argument("--weights", action="append", type=_key_value, default=[], metavar="MODEL=PATH", help="local weights file or folder for a model (repeatable)")
    build.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="image decoding processes (default: up to 4)")
    build.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    build.add_argument("--seed", type=int, default=0, help="seed of training, bootstrap and UMAP (default: 0)")

    evaluate = commands.add_parser("evaluate", help="measure H1 structure, H2 retrieval gap and H3 texture bias")
    evaluate.add_argument("--indexes", type=Path, default=Path("indexes"), help="indexes root or one corpus folder (default: indexes/)")
    evaluate.add_argument("--out", type=Path, default=Path("results"), help="results root; tables go to <out>/<corpus>/ (default: results/)")
    evaluate.add_argument(
        "--labels", choices=("all", "curated"), default="all",
        help="all labels, or curated ones only (type_source wga or wikiart); each label set keeps its own rows in the tables",
    )
    evaluate.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates per interval (default: 1000)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of bootstrap, shuffles and the H3 sample (default: 0)")
    evaluate.add_argument("--texture-sample", type=int, default=200, help="paintings per model perturbed for H3; 0 skips H3 (default: 200)")
    evaluate.add_argument("--min-class-size", type=int, default=5, help="H1 leaves out smaller classes (default: 5)")
    evaluate.add_argument("--weights", action="append", type=_key_value, default=[], metavar="MODEL=PATH", help="local weights of a model's encoder (repeatable)")
    evaluate.add_argument("--type-split", type=Path, help="JSON file overriding the additive/narrative split")

    project = commands.add_parser("project", help="compute UMAP and PCA maps of each model for the app")
    project.add_argument("--indexes", type=Path, default=Path("indexes"), help="indexes root or one corpus folder (default: indexes/)")
    project.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results/)")
    project.add_argument("--seed", type=int, default=0, help="UMAP random_state (default: 0)")
    project.add_argument("--neighbors", type=int, default=15, help="UMAP n_neighbors (default: 15)")
    project.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (default: 0.1)")

    report = commands.add_parser("report", help="print the result tables as Markdown")
    report.add_argument("--results", type=Path, default=Path("results"), help="results root or one corpus folder (default: results/)")
    report.add_argument("--output", type=Path, help="also write the report to this file")
    report.add_argument("--labels", choices=("all", "curated"), default="all", help="label set to report (default: all)")

    commands.add_parser("models", help="list the registered models")
    return parser


def check_model_names(models: list[str], indexes_root: Path) -> None:
    """Reject unknown model names before any model is loaded or any image encoded."""
    from core.encoders import OPEN_CLIP_PREFIX, default_weights, list_models

    known = set(list_models())
    unknown = [m for m in models if m not in known and not m.startswith(OPEN_CLIP_PREFIX) and default_weights(m, indexes_root) is None]
    if unknown:
        raise ValueError(
            f"Unknown model(s) {', '.join(unknown)}. Valid models: {', '.join(sorted(known))}, or "
            "open_clip:<ARCH>/<pretrained tag>. A CNN with a text tower (e.g. effnet-lite0+minilm) exists "
            "once `python -m core align` has trained it."
        )


def run_embed_command(args: argparse.Namespace) -> int:
    from core.embed import EmbedConfig, run_embed
    from core.images import DEFAULT_MAX_MEGAPIXELS
    from core.index import IndexConfig

    check_model_names(args.models, args.out)
    started = time.perf_counter()
    corpus = load_corpus_from_args(args)
    load_seconds = time.perf_counter() - started
    logger.info("Corpus %s: %s", corpus.name, corpus.report.summary())
    config = EmbedConfig(
        models=args.models,
        out=args.out,
        weights=dict(args.weights),
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        resize_mode="pad" if args.pad else "center_crop",
        max_megapixels=args.max_megapixels or DEFAULT_MAX_MEGAPIXELS,
        index=IndexConfig(kind=args.index_type),
        shard=args.shard,
    )
    runs = run_embed(corpus, config)
    print(f"\nCorpus {corpus.name} ({corpus.layout} layout, {len(corpus.table)} rows): loaded in {load_seconds:.1f} s")
    print(f"Validation: {corpus.report.summary()}")
    for run in runs:
        timings = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in run.timings_s.items())
        where = f" -> {run.index_dir}" if run.index_dir else " (shard: vectors cached, no index)"
        embedded = f"{run.embedded} embedded (" if config.shard is None else "("
        print(
            f"{run.model}: {embedded}{run.encoded} encoded, {run.cached} from cache, {run.copies} byte-identical copies), "
            f"{len(run.failed)} skipped; {timings}{where}"
        )
    if config.shard is None:
        print(f"Report: {config.out / corpus.name / 'validation.md'}")
    return 0


def run_search_command(args: argparse.Namespace) -> int:
    from core.encoders import create_encoder, default_weights
    from core.images import load_image
    from core.index import load_model_index
    from core.search import Searcher, check_encoder_matches

    if args.text is not None and not args.text.strip():
        raise ValueError("The text query is empty; type a description such as --text 'a mythological painting'.")
    model_index = load_model_index(args.index / args.model)
    if args.corpus_id is not None:
        result = Searcher(model_index).by_id(args.corpus_id, args.k)
    else:
        weights = args.weights or default_weights(model_index.model, args.index.parent)
        encoder = create_encoder(model_index.model, weights=weights, resize_mode=model_index.manifest["preprocess"]["resize_mode"])
        check_encoder_matches(encoder, model_index.manifest)
        searcher = Searcher(model_index, encoder)
        result = searcher.by_text(args.text, args.k) if args.text is not None else searcher.by_image(load_image(args.image), args.k)
    hits = result.hits[["rank", "score", "type", "artist", "title", "id"]].copy()
    # Ids stay whole so that they can be pasted back into --id; long titles are shortened.
    hits["title"] = [title if len(title) <= 48 else title[:47] + "…" for title in hits["title"].astype(str)]
    print(f"{result.model}: top-{args.k} for {result.query!r}")
    print(hits.to_string(index=False))
    return 0


def run_models_command(args: argparse.Namespace) -> int:
    from core.encoders import list_models

    for name in list_models():
        print(name)
    return 0


def run_align_command(args: argparse.Namespace) -> int:
    from core.align import AlignConfig, train_text_tower

    config = AlignConfig(
        text_field=args.text_field,
        head=args.head,
        projection_dim=args.projection_dim,
        max_epochs=args.max_epochs,
        seed=args.seed,
        split_seed=args.split_seed,
        resplit=args.resplit,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        patience=args.patience,
        early_stopping=args.early_stopping,
        hidden_dim=args.hidden_dim,
        batch_size=args.batch_size,
        models_dir=args.models_dir,
    )
    result = train_text_tower(args.index, args.image_model, args.text_model, config)
    print(f"{result.model_name}: best epoch {result.best_epoch} of {len(result.history)} -> {result.model_dir}")
    print(f"Pairs: {result.n_pairs}; split: {result.split_path}")
    for name, score in (("val", result.val), ("test", result.test)):
        print(
            f"{name}: text->image R@10 {score.recall_at_10:.3f} (random {score.recall_at_10_random:.3f}), "
            f"MedR {score.median_rank:.0f} (random {score.median_rank_random:.0f}) over {score.pool_size} paintings"
        )
    print(f"Index it with: python -m core embed --corpus CORPUS --models {result.model_name}")
    return 0


def run_build_command(args: argparse.Namespace) -> int:
    """Run every stage in order, each through its own command, so the log reads like the README."""
    from core.encoders.aligned import split_aligned_name

    corpus = load_corpus_from_args(args)
    corpus_args = [
        "--corpus", str(args.corpus), "--name", corpus.name, "--class-attribute", args.class_attribute,
        *(["--layout", args.layout] if args.layout else []),
        *(["--manifest", args.manifest] if args.manifest else []),
        *(["--encoding", args.encoding] if args.encoding else []),
        *(["--derive-timeframe"] if args.derive_timeframe else []),
        *[item for key, value in args.column for item in ("--column", f"{key}={value}")],
    ]
    weights = [item for key, value in args.weights for item in ("--weights", f"{key}={value}")]
    common = ["--out", str(args.out), "--workers", str(args.workers), "--device", args.device, *weights]
    corpus_dir = args.out / corpus.name
    cnn_models = list(dict.fromkeys([*args.models, *(split_aligned_name(name)[0] for name in args.align)]))
    stages = [["embed", *corpus_args, "--models", ",".join(cnn_models), *common]]
    for name in args.align:
        image_model, text_model = split_aligned_name(name)
        stages.append(["align", "--index", str(corpus_dir), "--image-model", image_model, "--text-model", text_model, "--seed", str(args.seed)])
    if args.align:
        stages.append(["embed", *corpus_args, "--models", ",".join(args.align), *common])
    stages.append(["evaluate", "--indexes", str(corpus_dir), "--out", str(args.results), "--seed", str(args.seed), *weights])
    stages.append(["project", "--indexes", str(corpus_dir), "--out", str(args.results), "--seed", str(args.seed)])
    for stage in stages:
        started = time.perf_counter()
        print(f"\n$ python -m core {' '.join(stage)}", flush=True)
        parsed = build_parser().parse_args(stage)
        COMMANDS[parsed.command](parsed)
        logger.info("Stage %s finished in %.1f s", stage[0], time.perf_counter() - started)
    print(f"\nDone. Start the app with: streamlit run app.py")
    return 0


def run_evaluate_command(args: argparse.Namespace) -> int:
    from core.evaluate import EvaluateConfig, corpus_dirs, evaluate_corpus
    from core.types import load_split

    config = EvaluateConfig(
        label_set=args.labels,
        split=load_split(args.type_split),
        n_boot=args.n_boot,
        seed=args.seed,
        min_class_size=args.min_class_size,
        texture_sample=args.texture_sample,
        weights=dict(args.weights),
    )
    for corpus_dir in corpus_dirs(args.indexes):
        out_dir = args.out / corpus_dir.name
        started = time.perf_counter()
        summaries = evaluate_corpus(corpus_dir, out_dir, config)
        print(f"{corpus_dir.name}: {len(summaries)} models evaluated in {time.perf_counter() - started:.1f} s -> {out_dir}")
        for name, summary in summaries.items():
            print(json.dumps({name: {key: summary[key] for key in summary if key.startswith(("h1_ratio", "h2_gap", "h3_"))}}))
    return 0


def run_project_command(args: argparse.Namespace) -> int:
    from core.evaluate import corpus_dirs
    from core.index import load_corpus_indexes
    from core.project import ProjectConfig, write_projections

    config = ProjectConfig(n_neighbors=args.neighbors, min_dist=args.min_dist, seed=args.seed)
    for corpus_dir in corpus_dirs(args.indexes):
        indexes, problems = load_corpus_indexes(corpus_dir)
        for name, reason in problems.items():
            logger.error("Model %s left out: %s", name, reason)
        if not indexes:
            raise FileNotFoundError(f"No usable index under {corpus_dir}; build one with `python -m core embed`.")
        path = write_projections(indexes, args.out / corpus_dir.name, config)
        print(f"{corpus_dir.name}: projections of {', '.join(indexes)} -> {path}")
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    from core.report import build_report

    if not args.results.is_dir():
        raise FileNotFoundError(f"Results folder {args.results} does not exist; build it with `python -m core evaluate`.")
    folders = [args.results] if (args.results / "h2_retrieval.parquet").is_file() or (args.results / "h1_structure.parquet").is_file() else sorted(
        p for p in args.results.iterdir() if p.is_dir()
    )
    texts = [build_report(folder, label_set=args.labels) for folder in folders]
    if not texts:
        raise FileNotFoundError(f"No results under {args.results}; build them with `python -m core evaluate`.")
    report = "\n\n".join(texts)
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 0


COMMANDS = {
    "embed": run_embed_command,
    "search": run_search_command,
    "align": run_align_command,
    "build": run_build_command,
    "evaluate": run_evaluate_command,
    "project": run_project_command,
    "report": run_report_command,
    "models": run_models_command,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        # faiss logs each CPU-specific build it could not load, which reads like an error.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        # Expected failures (bad input, missing weights, stale index) print one clear line, no traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
