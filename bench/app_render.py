"""App cold start and page render times with streamlit.testing.v1.AppTest, on the built indexes.

Cold start: the first `AppTest.from_file("app.py").run()` in a fresh process (imports, index and
encoder loading behind st.cache_resource, the default page). Then each page is rendered twice
through `switch_page`: the first render fills that page's caches, the second is a warm rerun.
The app reads $SEMGAP_INDEXES and $SEMGAP_RESULTS (default indexes/ and results/ of the repository).

    python -m bench.app_render
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/app_render.py`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO_ROOT, setup_logging, write_results

logger = logging.getLogger("bench.app_render")

PAGES = ("pages/search.py", "pages/gap.py", "pages/map.py", "pages/method.py")


def timed_run(app, timeout: float) -> tuple[float, list[str]]:
    """Run the script once; return the seconds and the messages of any exception elements."""
    started = time.perf_counter()
    app.run(timeout=timeout)
    seconds = time.perf_counter() - started
    return seconds, [str(element.message) for element in app.exception]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="App cold start and page render times through AppTest.")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per script run")
    args = parser.parse_args(argv)
    setup_logging()
    os.chdir(REPO_ROOT)  # app.py and pages/ are found relative to the working folder
    if not Path("app.py").is_file():
        raise FileNotFoundError(f"{REPO_ROOT / 'app.py'} not found: the app is not in this checkout.")
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=args.timeout)
    cold_s, cold_errors = timed_run(app, args.timeout)
    warm_s, warm_errors = timed_run(app, args.timeout)
    logger.info("cold start %.2f s, warm rerun %.2f s", cold_s, warm_s)
    pages = {}
    for page in PAGES:
        app.switch_page(page)
        first_s, first_errors = timed_run(app, args.timeout)
        again_s, again_errors = timed_run(app, args.timeout)
        pages[page] = {"first_render_s": first_s, "warm_rerun_s": again_s, "exceptions": first_errors + again_errors}
        logger.info("%s: first render %.2f s, warm rerun %.2f s, %d exceptions", page, first_s, again_s, len(first_errors + again_errors))
    payload = {
        "indexes": os.environ.get("SEMGAP_INDEXES", "indexes"),
        "cold_start_s": cold_s,
        "warm_rerun_s": warm_s,
        "cold_start_exceptions": cold_errors + warm_errors,
        "pages": pages,
    }
    write_results("app_render", payload)
    return payload


if __name__ == "__main__":
    main()
