"""Print the JSON results in bench/out/ as Markdown tables, for docs/BENCHMARKS.md.

    python -m bench.report
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/report.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OUT_DIR


def load(name: str) -> dict | None:
    path = OUT_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def header(record: dict) -> str:
    machine = record["machine"]
    start = ", ".join(f"{value:.1f}" for value in machine["load_avg_at_start"])
    end = ", ".join(f"{value:.1f}" for value in record.get("load_avg_at_end", []))
    return (
        f"`{record['command']}` on {machine['nproc']} cores ({machine['cpu_model']}), {machine['mem_total_gib']} GiB, "
        f"torch {machine.get('torch')}, faiss {machine.get('faiss')}, {record['created']}; "
        f"load average (1, 5, 15 min) {start} at start, {end} at end.\n"
    )


def table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def embed_section(record: dict) -> str:
    rows = []
    for model, result in record["models"].items():
        loop = result["loop_with_max_workers"]
        for workers, entry in result["end_to_end"].items():
            rows.append([
                model, result["weights"], result["images"], workers, f"{entry['job_images_per_s']:.1f}",
                f"{result['forward_images_per_s']:.1f}", f"**{entry['ratio_to_forward']:.2f}**",
                f"{result['decode_preprocess_ms_per_image']:.1f}", f"{result['forward_ms_per_image']:.1f}",
                f"{result['decode_share_serial']:.2f}", f"{loop['data_wait_share']:.2f}", f"{loop['forward_slowdown_in_loop']:.2f}",
            ])
    columns = ["model", "weights", "images", "workers", "job img/s", "forward alone img/s", "ratio",
               "decode+preprocess ms/img", "forward ms/img", "decode share", "data-wait share", "forward slowdown in loop"]
    return header(record) + "\n" + table(columns, rows)


def latency_section(record: dict) -> str:
    corpus, synthetic = record["corpus"], record["synthetic"]
    rows = [
        [f"by_id ({corpus['model']}, {corpus['index_size']} vectors, {corpus['index_type']})", corpus["by_id"]["p50_ms"], corpus["by_id"]["p95_ms"]],
        [f"by_image ({corpus['model']}, {corpus['weights']} weights)", corpus["by_image"]["p50_ms"], corpus["by_image"]["p95_ms"]],
        [f"by_text ({corpus['by_text']['source']})", corpus["by_text"]["p50_ms"], corpus["by_text"]["p95_ms"]],
        [f"by_vector, synthetic {synthetic['size']:,} x {synthetic['dim']} flat", synthetic["by_vector"]["p50_ms"], synthetic["by_vector"]["p95_ms"]],
        ["FAISS IndexFlatIP search alone, same index", synthetic["faiss_flat_search"]["p50_ms"], synthetic["faiss_flat_search"]["p95_ms"]],
        ["NumPy brute force (matmul + argpartition), same vectors", synthetic["numpy_brute_force"]["p50_ms"], synthetic["numpy_brute_force"]["p95_ms"]],
    ]
    rows = [[name, f"{p50:.2f}", f"{p95:.2f}"] for name, p50, p95 in rows]
    text = header(record) + "\n" + table(["query", "p50 ms", "p95 ms"], rows)
    text += f"\nNumPy over FAISS (p50): **{synthetic['numpy_over_faiss_p50']:.2f}x**; same top-10 on {synthetic['same_top_k_share']:.0%} of 20 checked queries.\n\n"
    encode_rows = []
    for model, entry in record["encoding"].items():
        text_p50 = f"{entry['text']['p50_ms']:.1f}" if "text" in entry else "no text tower"
        encode_rows.append([model, entry["weights"], f"{entry['image']['p50_ms']:.1f}", f"{entry['image']['p95_ms']:.1f}", text_p50])
    return text + table(["model", "weights", "image encode p50 ms", "image encode p95 ms", "text encode p50 ms"], encode_rows)


def ann_section(record: dict) -> str:
    text = header(record) + "\n"
    summary, curve = [], []
    for n, kinds in record["sizes"].items():
        for kind, result in kinds.items():
            if "skipped" in result:
                summary.append([f"{int(n):,}", kind, "skipped: " + result["skipped"], "", "", "", ""])
                continue
            chosen = result["chosen"] or {}
            summary.append([
                f"{int(n):,}", kind, f"{result['build_s']:.1f}", f"{result['index_mib']:.0f}", f"{result['rss_delta_mib']:.0f}",
                chosen.get("setting") or "exact", f"{chosen.get('qps', 0):,.0f} / {chosen.get('recall_at_10', 0):.3f}",
            ])
            for point in result["curve"]:
                curve.append([f"{int(n):,}", kind, point["setting"] or "exact", f"{point['recall_at_10']:.3f}", f"{point['qps']:,.0f}"])
    text += table(["n", "index", "build s", "index MiB", "RSS delta MiB", "chosen setting", "QPS / recall@10 there"], summary)
    text += "\nRecall/QPS curve (batch of queries):\n\n" + table(["n", "index", "setting", "recall@10", "QPS"], curve)
    return text + f"\nPlot: {record['plot']}\n"


def umap_section(record: dict) -> str:
    rows = [[name, f"{entry['points']:,}", entry["dim"], f"{entry['umap_s']:.1f}", f"{entry['pca_s']:.2f}"] for name, entry in record["inputs"].items()]
    return header(record) + f"\nnumba warm-up (500 points, not in the rows): {record['numba_warmup_500_points_s']:.1f} s\n\n" + table(["input", "points", "dim", "UMAP s", "PCA s"], rows)


def app_section(record: dict) -> str:
    rows = [["cold start (app.py, default page)", f"{record['cold_start_s']:.2f}", f"{record['warm_rerun_s']:.2f}", len(record["cold_start_exceptions"])]]
    rows += [[page, f"{entry['first_render_s']:.2f}", f"{entry['warm_rerun_s']:.2f}", len(entry["exceptions"])] for page, entry in record["pages"].items()]
    return header(record) + "\n" + table(["run", "first s", "warm rerun s", "exceptions"], rows)


SECTIONS = {
    "embed_throughput": embed_section,
    "query_latency": latency_section,
    "index_ann": ann_section,
    "umap_time": umap_section,
    "app_render": app_section,
}


def main() -> None:
    for name, render in SECTIONS.items():
        record = load(name)
        print(f"## {name}\n")
        print(render(record) if record else f"No {OUT_DIR / (name + '.json')} yet: run `python -m bench.{name}`.\n")
        # Tagged runs of the same script, e.g. index_ann-300k.json from `--tag 300k`.
        for path in sorted(OUT_DIR.glob(f"{name}-*.json")):
            print(f"### {path.stem}\n")
            print(render(load(path.stem)))


if __name__ == "__main__":
    main()
