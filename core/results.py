"""Reading and writing the tidy result tables under results/<corpus>/."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

TABLES = ("h1_structure", "h2_retrieval", "h2_paired", "h3_texture", "projections")


def write_table(table: pd.DataFrame, out_dir: Path, name: str) -> Path:
    """Write a table as parquet and CSV, each through a temporary file renamed into place."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".parquet", lambda t, p: t.to_parquet(p, index=False)), (".csv", lambda t, p: t.to_csv(p, index=False))):
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=out_dir)
        os.close(handle)
        try:
            write(table, temporary)
            os.chmod(temporary, 0o644)  # mkstemp makes it private; the app may run as another user
            os.replace(temporary, out_dir / f"{name}{suffix}")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return out_dir / f"{name}.parquet"


def write_label_set(table: pd.DataFrame, out_dir: Path, name: str, label_set: str) -> Path:
    """Replace the rows of one label set in a result table, keeping the rows of the others.

    The tables of all label sets live in one file, so the app and the report compare them.
    """
    existing = read_table(out_dir, name)
    if existing is not None and "label_set" in existing.columns:
        other_sets = existing[existing["label_set"].astype(str) != label_set]
        table = pd.concat([other_sets, table], ignore_index=True)
    return write_table(table, out_dir, name)


def read_table(results_dir: Path, name: str) -> pd.DataFrame | None:
    """Return a result table, or None when it has not been built."""
    if name not in TABLES:
        raise ValueError(f"Unknown result table {name!r}; valid tables: {', '.join(TABLES)}.")
    path = Path(results_dir) / f"{name}.parquet"
    return pd.read_parquet(path) if path.is_file() else None
