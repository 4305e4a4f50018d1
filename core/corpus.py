"""Corpus loaders: a manifest CSV, the SemArt layout or one folder per class, read into one table.

Every loader returns the corpus table described in docs/ARTEFACTS.md plus a ValidationReport that
lists each row left out (missing file, duplicate id, unreadable image). Nothing is dropped silently.

Layouts, detected in this order when `CorpusOptions.layout` is unset:
  manifest  a CSV with an image column (a .csv path, or one such CSV at the top of a folder);
            image paths are relative to the CSV's folder
  semart    semart_train.csv / semart_val.csv / semart_test.csv (any subset) beside Images/
  folders   root/<class>/<images>: the folder name fills `type` or `class_attribute`
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlparse

import pandas as pd

from core.images import ImageDecodeError, load_image
from core.types import OTHER, TypeSplit, load_split, normalize_type

logger = logging.getLogger(__name__)

LAYOUTS = ("manifest", "semart", "folders")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
SEMART_PATTERN = re.compile(r"^semart_(\w+)\.csv$", re.IGNORECASE)
CLASS_ATTRIBUTES = ("type", "artist", "school", "timeframe", "style")

# Canonical field -> accepted source column names, best first. Matching ignores case, spaces,
# hyphens and underscores. `genre` is a last resort for `type`: WikiArt-style CSVs that have both
# (`type`, `wikiart_genre`) keep them apart.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_file", "image_path", "imagepath", "img", "file", "filename", "file_name",
              "filepath", "file_path", "path", "jpg_link", "image_url", "url"),
    "title": ("title", "painting_title", "artwork_title"),
    "artist": ("artist", "author", "painter", "artist_name", "creator"),
    "artist_id": ("artist_id", "artistid", "artist_slug", "author_id"),
    "year": ("year", "date", "creation_date", "date_created"),
    "type": ("type", "art_type", "genre"),
    "school": ("school",),
    "timeframe": ("timeframe", "time_frame"),
    "style": ("style", "movement"),
    "description": ("description", "comment", "artistic_comment", "caption"),
    "type_source": ("type_source",),
}
FIELDS = tuple(COLUMN_ALIASES)
STRING_FIELDS = ("title", "artist", "artist_id", "type", "school", "timeframe", "style", "description",
                 "type_source")

# Column order of the table; `split` (SemArt) and the orig:<column> copies follow.
TABLE_COLUMNS = ("id", "image_path", "title", "artist", "artist_id", "year", "type", "type_group",
                 "school", "timeframe", "timeframe_source", "style", "description", "type_source")

_YEAR = re.compile(r"(?<!\d)(1\d{3}|20\d{2})(?!\d)")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class CorpusError(ValueError):
    """A corpus that cannot be read: no layout found, no image column, no rows."""

    def __init__(self, message: str, report: "ValidationReport | None" = None):
        super().__init__(message)
        self.report = report


@dataclass
class CorpusOptions:
    """How to read a corpus. The defaults detect everything."""

    layout: str | None = None  # "manifest", "semart" or "folders"; None detects it
    manifest: str | os.PathLike | None = None  # the CSV to read when a folder contains several
    columns: dict[str, str | None] = field(default_factory=dict)  # canonical field -> source column (None: ignore)
    encoding: str | None = None  # CSV encoding; None detects utf-8, cp1252 or cp850
    class_attribute: str = "type"  # field the folder name fills in the folders layout
    derive_timeframe: bool = False  # fill a missing timeframe with the 50-year bin of `year`
    check_images: bool = False  # fully decode every image to find unreadable ones (slow)
    require_images: bool = True  # drop rows whose image file is missing (False keeps them, still reported)
    split: TypeSplit = field(default_factory=load_split)  # additive/narrative groups for `type_group`
    name: str | None = None  # corpus name; default: the corpus folder's name


@dataclass
class ValidationReport:
    """Problems found while loading a corpus, each one listed."""

    source: str = ""  # the files or folder read
    rows_read: int = 0  # rows (or image files) in the source before validation
    found_columns: dict[str, str] = field(default_factory=dict)  # canonical field -> source column
    missing_columns: list[str] = field(default_factory=list)  # canonical fields the source lacks
    derived_columns: dict[str, str] = field(default_factory=dict)  # field -> how it was derived
    source_columns: list[str] = field(default_factory=list)  # every column of the source, as read
    encoding: str = ""  # how the CSV files were decoded
    missing_files: list[tuple[str, str]] = field(default_factory=list)  # (id, path)
    duplicate_ids: list[str] = field(default_factory=list)  # one entry per dropped repeat
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    kept_missing: list[str] = field(default_factory=list)  # ids of missing files kept (require_images=False)

    def add_unreadable(self, id: str, reason: str) -> None:
        """Record an image that failed to decode (the embed job calls this and drops the row)."""
        if id in self.kept_missing:  # its file was missing all along: now it is skipped for that
            self.kept_missing.remove(id)
            return
        if all(existing != id for existing, _ in self.unreadable):
            self.unreadable.append((id, reason))

    @property
    def skipped_count(self) -> int:
        missing_dropped = len(self.missing_files) - len(self.kept_missing)
        return missing_dropped + len(self.duplicate_ids) + len(self.unreadable)

    @property
    def rows(self) -> int:
        return self.rows_read - self.skipped_count

    def summary(self) -> str:
        kept = f", {len(self.kept_missing)} kept" if self.kept_missing else ""
        return (
            f"{self.rows} rows, {self.skipped_count} skipped ({len(self.missing_files)} missing files{kept}, "
            f"{len(self.duplicate_ids)} duplicate ids, {len(self.unreadable)} unreadable)"
        )

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "source": self.source,
            "encoding": self.encoding,
            "rows_read": self.rows_read,
            "rows": self.rows,
            "skipped_count": self.skipped_count,
            "found_columns": dict(self.found_columns),
            "missing_columns": list(self.missing_columns),
            "derived_columns": dict(self.derived_columns),
            "source_columns": list(self.source_columns),
            "missing_files": [{"id": id, "path": path} for id, path in self.missing_files],
            "kept_missing": list(self.kept_missing),
            "duplicate_ids": list(self.duplicate_ids),
            "unreadable": [{"id": id, "reason": reason} for id, reason in self.unreadable],
        }

    def to_markdown(self) -> str:
        lines = ["# Validation report", "", self.summary(), "", f"- source: `{self.source}`"]
        if self.encoding:
            lines.append(f"- encoding: {self.encoding}")
        found = ", ".join(f"{name} <- `{column}`" for name, column in self.found_columns.items())
        lines.append(f"- columns found: {found or 'none'}")
        lines.append(f"- columns missing: {', '.join(self.missing_columns) or 'none'}")
        for name, how in self.derived_columns.items():
            lines.append(f"- {name}: {how}")
        sections = [
            ("Missing files", ("id", "path"), self.missing_files),
            ("Duplicate ids (first kept)", ("id",), [(id,) for id in self.duplicate_ids]),
            ("Unreadable images", ("id", "reason"), self.unreadable),
        ]
        for title, header, items in sections:
            lines += ["", f"## {title} ({len(items)})", ""]
            if not items:
                lines.append("None.")
                continue
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + " --- |" * len(header))
            lines += ["| " + " | ".join(_md_cell(value) for value in item) + " |" for item in items]
        return "\n".join(lines) + "\n"


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclass
class Corpus:
    """A loaded corpus: the table (one row per painting) and what validation found."""

    name: str
    root: Path  # ids are image paths relative to this folder
    layout: str  # "manifest", "semart" or "folders"
    table: pd.DataFrame
    report: ValidationReport


# ---------------------------------------------------------------------------------------------
# Entry point


def load_corpus(path: str | os.PathLike, options: CorpusOptions | None = None) -> Corpus:
    """Read a corpus in any supported layout into one validated table."""
    options = options or CorpusOptions()
    path = Path(os.path.abspath(os.fspath(path)))
    if not path.exists():
        raise CorpusError(f"Corpus path {path} does not exist.")

    layout, sources = detect_layout(path, options)
    names = [source.name for source in sources]
    logger.info("Corpus layout: %s (%s)", layout, ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""))
    root = path.parent if path.is_file() else path

    if layout == "manifest":
        table, report = _read_manifest(sources[0], options)
    elif layout == "semart":
        table, report = _read_semart(root, sources, options)
    else:
        table, report = _read_folders(root, sources, options)

    table = _validate(table, report, options)
    if table.empty:
        raise CorpusError(_empty_message(path, layout, report), report)
    logger.info("Corpus %s: %s", path, report.summary())
    name = options.name or root.name
    return Corpus(name=name, root=root, layout=layout, table=table.reset_index(drop=True), report=report)


def detect_layout(path: Path, options: CorpusOptions) -> tuple[str, list[Path]]:
    """Return the layout and its sources: the manifest CSV, the SemArt split files or the class folders."""
    layout = options.layout
    if layout is not None and layout not in LAYOUTS:
        raise CorpusError(f"Unknown corpus layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")

    if path.is_file():
        if layout in (None, "manifest"):
            return "manifest", [path]
        if layout == "semart":
            return "semart", [path]
        raise CorpusError(f"Layout 'folders' needs a folder, but {path} is a file.")

    if options.manifest is not None or layout == "manifest":
        return "manifest", [_choose_manifest(path, options)]

    semart_files = sorted((p for p in path.glob("*.csv") if SEMART_PATTERN.match(p.name)), key=_split_order)
    if layout is None:
        candidates = [p for p in _top_level_csvs(path) if p not in semart_files and _has_image_column(p, options)]
        if len(candidates) > 1:
            raise CorpusError(_several_manifests_message(path, candidates))
        if candidates:
            return "manifest", candidates
    if layout in (None, "semart") and semart_files:
        return "semart", semart_files
    ignored = [p.name for p in _top_level_csvs(path) if p not in semart_files]
    if layout is None and ignored:
        logger.warning(
            "Ignored %s: no image column found (expected one of %s, ...). Name it with --column image=NAME "
            "or --manifest FILE to read it as the manifest.", ", ".join(ignored), ", ".join(COLUMN_ALIASES["image"][:4]),
        )
    if layout == "semart":
        raise CorpusError(f"No SemArt split files (semart_train.csv, semart_val.csv, semart_test.csv) in {path}.")
    class_folders = _class_folders(path)
    if layout == "folders" or class_folders:
        return "folders", class_folders
    raise CorpusError(
        f"No corpus found at {path}: looked for a CSV with an image column "
        f"({', '.join(COLUMN_ALIASES['image'][:6])}, ...), semart_*.csv files, and sub-folders holding "
        f"images ({', '.join(IMAGE_EXTENSIONS)})."
    )


def _split_order(csv_path: Path) -> tuple[int, str]:
    split = SEMART_PATTERN.match(csv_path.name).group(1).lower()
    return (("train", "val", "test").index(split) if split in ("train", "val", "test") else 3, split)


def _top_level_csvs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")


def _choose_manifest(folder: Path, options: CorpusOptions) -> Path:
    if options.manifest is not None:
        manifest = Path(options.manifest)
        manifest = manifest if manifest.is_absolute() else folder / manifest
        if not manifest.is_file():
            found = ", ".join(p.name for p in _top_level_csvs(folder)) or "none"
            raise CorpusError(f"Manifest {manifest} not found. CSV files in {folder}: {found}.")
        return manifest
    csvs = _top_level_csvs(folder)
    candidates = [p for p in csvs if _has_image_column(p, options)]
    if len(candidates) > 1:
        raise CorpusError(_several_manifests_message(folder, candidates))
    if candidates:
        return candidates[0]
    if len(csvs) == 1:  # let the reader explain which column is missing
        return csvs[0]
    raise CorpusError(f"No manifest CSV in {folder}: found {', '.join(p.name for p in csvs) or 'no CSV files'}. "
                      "Name one with --manifest NAME (CorpusOptions.manifest).")


def _several_manifests_message(folder: Path, candidates: list[Path]) -> str:
    names = ", ".join(p.name for p in candidates)
    return (f"{folder} holds several manifest CSVs ({names}): choose one with --manifest NAME "
            "(CorpusOptions.manifest), or pass the CSV's path instead of the folder.")


def _has_image_column(csv_path: Path, options: CorpusOptions) -> bool:
    try:
        with open(csv_path, "rb") as file:
            first_line = file.readline(1 << 16)
    except OSError:
        return False
    text = decode_bytes(first_line, options.encoding)[0].lstrip("\ufeff")
    header = next(csv.reader([text.strip("\r\n")], delimiter=sniff_delimiter(text)), [])
    explicit = options.columns.get("image")
    if explicit:
        return explicit.lower() in (column.lower() for column in header)
    return _match_alias("image", header) is not None


def _class_folders(root: Path) -> list[Path]:
    return [folder for folder in sorted(root.iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and _first_image(folder)]


def _first_image(folder: Path) -> Path | None:
    return next((p for p in folder.rglob("*") if _is_image_file(p)), None)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _empty_message(path: Path, layout: str, report: ValidationReport) -> str:
    message = f"Corpus {path} ({layout} layout) has no usable rows: {report.summary()}."
    if report.missing_files:
        shown = ", ".join(p or f"{id} (no image)" for id, p in report.missing_files[:3])
        message += (f" Image files not found, e.g. {shown}. Manifest image paths are read relative to the "
                    "CSV's folder: check that the images sit where the manifest says.")
    return message


# ---------------------------------------------------------------------------------------------
# CSV reading: encoding, delimiter, column aliases


def detect_encoding(data: bytes) -> tuple[str, str]:
    """Return (encoding, how it was chosen) for CSV bytes: utf-8, cp1252 or cp850.

    UTF-8 is tried strictly first (a BOM selects utf-8-sig). Otherwise each of cp1252 and cp850
    that decodes without error is scored: +1 for every non-ASCII letter whose case matches an
    adjacent ASCII letter ('Gérard', 'DÜRER'), 0 for typographic punctuation, -1 for anything else
    (box drawing, control characters, a capital inside a lowercase word). The two code pages put
    accented letters at different bytes, so the wrong one yields symbols or case breaks. Ties go to
    cp1252.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig", "byte-order mark"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", "byte-order mark"
    try:
        data.decode("utf-8")
        return "utf-8", "valid UTF-8"
    except UnicodeDecodeError:
        pass
    scores = {}
    for encoding in ("cp1252", "cp850"):
        try:
            scores[encoding] = _plausibility(data.decode(encoding))
        except UnicodeDecodeError:
            continue
    if not scores:
        return "latin-1", "neither UTF-8, cp1252 nor cp850 decode it; latin-1 reads any byte"
    best = max(scores, key=lambda encoding: (scores[encoding], encoding == "cp1252"))
    detail = ", ".join(f"{encoding} {score:+d}" for encoding, score in scores.items())
    return best, f"accented-letter score {detail}"


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_TEXT_PUNCTUATION = {"Pd", "Pi", "Pf", "Po", "Ps", "Pe", "Sc", "Zs", "No", "Sm"}


def _plausibility(text: str) -> int:
    score = 0
    for match in _NON_ASCII.finditer(text):
        char, at = match.group(), match.start()
        if char.isalpha():
            neighbours = [c for c in (text[at - 1:at], text[at + 1:at + 2]) if c.isascii() and c.isalpha()]
            cased = char.isupper() or char.islower()
            fits = not neighbours or not cased or any(c.isupper() == char.isupper() for c in neighbours)
            score += 1 if fits else -1
        elif unicodedata.category(char) not in _TEXT_PUNCTUATION or char == "\u00a6":
            score -= 1
    return score


def decode_bytes(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode CSV bytes with the given encoding, or a detected one. Returns (text, encoding note)."""
    if encoding:
        try:
            return data.decode(encoding), f"{encoding} (given)"
        except UnicodeDecodeError as error:
            raise CorpusError(f"Cannot decode the CSV as {encoding}: {error}. Leave the encoding unset to "
                              "detect it, or name another (utf-8, cp1252, cp850).") from error
        except LookupError as error:
            raise CorpusError(f"Unknown encoding {encoding!r}: use a Python codec name such as utf-8, "
                              "cp1252 or cp850.") from error
    detected, how = detect_encoding(data)
    return data.decode(detected), f"{detected} (detected: {how})"


def sniff_delimiter(text: str) -> str:
    """Pick the delimiter (comma, tab, semicolon) that splits the header line into most fields."""
    header = text.split("\n", 1)[0]
    counts = {delimiter: len(next(csv.reader([header], delimiter=delimiter), []))
              for delimiter in (",", "\t", ";")}
    return max(counts, key=lambda delimiter: counts[delimiter])  # ties keep the order above


def read_csv(path: Path, encoding: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read a CSV as strings ("" for empty cells). Returns (frame, encoding note)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorpusError(f"Cannot read {path}: {error}") from error
    text, note = decode_bytes(data, encoding)
    text = text.lstrip("\ufeff")
    try:
        delimiter = sniff_delimiter(text)
    except csv.Error as error:
        raise CorpusError(f"Cannot parse {path} as a CSV table ({error}); is it a text file?") from error
    logger.info("Reading %s: encoding %s, delimiter %r", path.name, note, delimiter)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise CorpusError(f"Cannot parse {path} as a {delimiter!r}-separated table: {error}") from error
    frame.columns = [str(column).strip() for column in frame.columns]
    _warn_short_rows(path, text, delimiter, len(frame.columns))
    return frame, note


def _warn_short_rows(path: Path, text: str, delimiter: str, n_columns: int) -> None:
    """Log the rows that have fewer fields than the header, whose missing cells read as empty."""
    short = [
        line for line, fields in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), start=1)
        if line > 1 and fields and len(fields) < n_columns
    ]
    if short:
        logger.warning(
            "%s: %d rows have fewer than the header's %d fields (lines %s); their missing cells are read as empty.",
            path.name, len(short), n_columns, ", ".join(map(str, short[:5])) + (", ..." if len(short) > 5 else ""),
        )


def _alias_key(name: str) -> str:
    return re.sub(r"[\s_-]+", "_", str(name).strip().lower())


def _match_alias(field_name: str, columns: Sequence[str]) -> str | None:
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(_alias_key(column), column)
    return next((by_key[alias] for alias in COLUMN_ALIASES[field_name] if alias in by_key), None)


def resolve_columns(columns: Sequence[str], explicit: dict[str, str | None] | None = None,
                    source: str = "the CSV") -> dict[str, str]:
    """Map canonical fields to source columns: explicit names first, then the alias table."""
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(FIELDS))
    if unknown:
        raise CorpusError(f"Unknown field(s) {', '.join(unknown)} in the column mapping: valid fields are "
                          f"{', '.join(FIELDS)}.")
    mapping: dict[str, str] = {}
    for field_name, column in explicit.items():
        if not column:
            continue
        match = column if column in columns else next((c for c in columns if c.lower() == column.lower()), None)
        if match is None:
            raise CorpusError(f"Column {column!r} (for {field_name}) is not in {source}: columns found are "
                              f"{', '.join(columns)}.")
        mapping[field_name] = match
    taken = set(mapping.values())
    for field_name in FIELDS:
        if field_name in explicit:
            continue
        match = _match_alias(field_name, [c for c in columns if c not in taken])
        if match is not None:
            mapping[field_name] = match
            taken.add(match)
    return mapping


# ---------------------------------------------------------------------------------------------
# Layout readers


def _read_manifest(csv_path: Path, options: CorpusOptions) -> tuple[pd.DataFrame, ValidationReport]:
    raw, note = read_csv(csv_path, options.encoding)
    report = ValidationReport(source=str(csv_path), encoding=note, source_columns=list(raw.columns))
    mapping = resolve_columns(list(raw.columns), options.columns, source=csv_path.name)
    if "image" not in mapping:
        raise CorpusError(
            f"{csv_path} has no image column: looked for {', '.join(COLUMN_ALIASES['image'])} (any case); "
            f"columns found: {', '.join(raw.columns) or 'none'}. Name it with columns={{'image': NAME}} "
            "or `--column image=NAME`.",
            report,
        )
    if raw.empty:
        raise CorpusError(f"Manifest {csv_path} has a header but no rows.", report)
    table = _build_table(raw, mapping, csv_path.parent, "", report, options)
    return table, report


def _read_semart(root: Path, split_files: list[Path],
                 options: CorpusOptions) -> tuple[pd.DataFrame, ValidationReport]:
    frames, notes = [], []
    for split_file in split_files:
        raw, note = read_csv(split_file, options.encoding)
        match = SEMART_PATTERN.match(split_file.name)
        raw["split"] = match.group(1).lower() if match else split_file.stem
        frames.append(raw)
        notes.append(f"{split_file.name}: {note}")
    raw = pd.concat(frames, ignore_index=True).fillna("")
    source_columns = [c for c in raw.columns if c != "split"]
    report = ValidationReport(source=", ".join(str(p) for p in split_files), encoding="; ".join(notes),
                              source_columns=source_columns)
    mapping = resolve_columns(source_columns, options.columns, source="the SemArt files")
    if "image" not in mapping:
        raise CorpusError(f"SemArt files {report.source} have no IMAGE_FILE column; columns found: "
                          f"{', '.join(source_columns)}.", report)
    if raw.empty:
        raise CorpusError(f"SemArt files {report.source} hold no rows.", report)

    image_folder = next((name for name in ("Images", "images") if (root / name).is_dir()), "Images")
    table = _build_table(raw[source_columns], mapping, root, image_folder, report, options,
                         default_type_source="semart")
    table.insert(len(TABLE_COLUMNS), "split", raw["split"].to_numpy())
    return table, report


def _read_folders(root: Path, class_folders: list[Path],
                  options: CorpusOptions) -> tuple[pd.DataFrame, ValidationReport]:
    attribute = options.class_attribute
    if attribute not in CLASS_ATTRIBUTES:
        raise CorpusError(f"Unknown class attribute {attribute!r}: choose one of {', '.join(CLASS_ATTRIBUTES)}.")
    rows = []
    for folder in class_folders:
        for image in sorted(p for p in folder.rglob("*") if _is_image_file(p)):
            rows.append({"image": image.relative_to(root).as_posix(), "folder": folder.name})
    loose = sorted(p for p in root.iterdir() if _is_image_file(p))
    if loose:
        logger.warning("%d image(s) directly in %s belong to no class folder: kept with an empty %s",
                       len(loose), root, attribute)
        rows += [{"image": image.name, "folder": ""} for image in loose]
    if not rows:
        raise CorpusError(f"No images in the class folders of {root} (looked for {', '.join(IMAGE_EXTENSIONS)}).")

    raw = pd.DataFrame(rows)
    raw[attribute] = raw["folder"]
    known = set(options.split.types) | set(OTHER)
    unknown = sorted({normalize_type(name) for name in raw["folder"] if name} - known)
    if attribute == "type" and unknown:
        logger.warning("Class folders %s are not art types (%s): if they name another attribute, set "
                       "class_attribute to one of %s", ", ".join(unknown), ", ".join(sorted(known)),
                       ", ".join(CLASS_ATTRIBUTES[1:]))
    report = ValidationReport(source=str(root), source_columns=["folder"])
    mapping = {"image": "image", attribute: attribute}
    table = _build_table(raw, mapping, root, "", report, options,
                         default_type_source="folder" if attribute == "type" else "")
    table = table[[c for c in table.columns if not c.startswith("orig:")]].copy()
    table["orig:folder"] = raw["folder"].to_numpy()
    return table, report


# ---------------------------------------------------------------------------------------------
# The table


def _build_table(raw: pd.DataFrame, mapping: dict[str, str], root: Path, image_folder: str,
                 report: ValidationReport, options: CorpusOptions, default_type_source: str = "") -> pd.DataFrame:
    """Turn a raw string frame into the corpus table (before validation)."""
    report.rows_read = len(raw)
    report.found_columns = {name: column for name, column in mapping.items()}
    report.missing_columns = [name for name in FIELDS if name not in mapping]

    def column(name: str) -> pd.Series:
        if name in mapping:
            return raw[mapping[name]].astype(str).str.strip()
        return pd.Series([""] * len(raw), index=raw.index, dtype=object)

    images = column("image")
    if images.str.match(_URL).any():
        logger.info("Image column %r contains URLs: looking for each file at its URL path under %s",
                    mapping["image"], root)
    relative = [_relative_image(value, image_folder) for value in images]
    ids, paths = zip(*(_id_and_path(value, root, at) for at, value in enumerate(relative))) if relative else ((), ())

    table = pd.DataFrame({"id": list(ids), "image_path": list(paths)}, index=raw.index)
    for name in ("title", "artist", "artist_id", "school", "timeframe", "style", "description", "type_source"):
        table[name] = column(name)
    table["year"] = pd.array([parse_year(value) for value in column("year")], dtype="Int64")
    table["type"] = column("type").map(normalize_type)
    table["type_group"] = table["type"].map(options.split.group)

    if default_type_source and "type_source" not in mapping:
        table["type_source"] = table["type"].map(lambda value: default_type_source if value else "")
        report.derived_columns["type_source"] = f"'{default_type_source}' where a type is given"
    _derive_artist_id(table, mapping, report)
    _derive_timeframe(table, options.derive_timeframe, report)

    table = table[list(TABLE_COLUMNS)].reset_index(drop=True)
    origin = pd.DataFrame({f"orig:{name}": raw[name].astype(str).to_numpy() for name in raw.columns})
    return pd.concat([table, origin], axis=1)


def _derive_artist_id(table: pd.DataFrame, mapping: dict[str, str], report: ValidationReport) -> None:
    blank = (table["artist_id"] == "") & (table["artist"] != "")
    if blank.any():
        table.loc[blank, "artist_id"] = table.loc[blank, "artist"].map(artist_slug)
        how = "derived from artist" if "artist_id" not in mapping else "blank cells derived from artist"
        report.derived_columns["artist_id"] = f"{how} ({int(blank.sum())} rows): 'SURNAME, Given' -> given-surname"
        if "artist_id" in report.missing_columns:
            report.missing_columns.remove("artist_id")


def _derive_timeframe(table: pd.DataFrame, derive: bool, report: ValidationReport) -> None:
    table["timeframe_source"] = table["timeframe"].map(lambda value: "catalogue" if value else "")
    if not derive:
        return
    fill = (table["timeframe"] == "") & table["year"].notna()
    table.loc[fill, "timeframe"] = table.loc[fill, "year"].map(timeframe_from_year)
    table.loc[fill, "timeframe_source"] = "year"
    if fill.any():
        report.derived_columns["timeframe"] = f"50-year bin of year where missing ({int(fill.sum())} rows)"


def _relative_image(value: str, image_folder: str) -> str:
    """Normalise an image cell to a path string: URL path, "/" separators, optional folder prefix."""
    if not value:
        return ""
    if _URL.match(value):
        value = unquote(urlparse(value).path).lstrip("/")
    value = value.replace("\\", "/")
    if image_folder and not os.path.isabs(value):
        value = f"{image_folder}/{value}"
    return value


def _id_and_path(value: str, root: Path, at: int) -> tuple[str, str]:
    """Return the row's id (path relative to the root, "/" separators) and absolute image path."""
    if not value:
        return f"<row {at + 2}: no image>", ""  # row number as in a spreadsheet (header is row 1)
    absolute = os.path.normpath(value if os.path.isabs(value) else os.path.join(root, value))
    relative = os.path.relpath(absolute, root)
    image_id = Path(absolute).as_posix() if relative.startswith("..") else Path(relative).as_posix()
    return image_id, absolute


def parse_year(value: object) -> int | None:
    """Return the first 4-digit year (1000-2099) in a date string ("c. 1650", "1640-45"), or None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    match = _YEAR.search(str(value))
    return int(match.group(1)) if match else None


def timeframe_from_year(year: object) -> str:
    """Return the Web Gallery of Art 50-year bin of a year: 1601..1650 -> "1601-1650", 1600 -> "1551-1600"."""
    if year is None or pd.isna(year):
        return ""
    start = (int(year) - 1) // 50 * 50 + 1
    return f"{start}-{start + 49}"


def artist_slug(name: str) -> str:
    """Normalise an artist name to an id: "BROUWER, Adriaen" and "Adriaen Brouwer" -> "adriaen-brouwer"."""
    text = str(name).strip()
    if text.count(",") == 1:  # Web Gallery of Art order: SURNAME, Given
        surname, given = (part.strip() for part in text.split(","))
        text = f"{given} {surname}"
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------------------------------------
# Validation


def _validate(table: pd.DataFrame, report: ValidationReport, options: CorpusOptions) -> pd.DataFrame:
    """Drop duplicate ids, missing files and (optionally) unreadable images, listing each one."""
    repeated = table["id"].duplicated(keep="first")
    report.duplicate_ids = table.loc[repeated, "id"].tolist()
    table = table[~repeated]

    no_image = table["image_path"] == ""
    exists = table["image_path"].map(lambda p: bool(p) and os.path.isfile(p))
    missing = ~exists
    report.missing_files = list(zip(table.loc[missing, "id"], table.loc[missing, "image_path"]))
    if missing.any():
        logger.warning("%d of %d image files are missing, e.g. %s", int(missing.sum()), len(table),
                       table.loc[missing, "image_path"].iloc[0] or table.loc[missing, "id"].iloc[0])
    if options.require_images:
        table = table[exists]
    else:
        report.kept_missing = table.loc[missing & ~no_image, "id"].tolist()
        table = table[exists | ~no_image]

    if options.check_images and not table.empty:
        table = _drop_unreadable(table, report)
    return table


def _drop_unreadable(table: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    present = table["image_path"].map(os.path.isfile)

    def check(path: str) -> str:
        try:
            load_image(path)
        except ImageDecodeError as error:
            return error.reason
        return ""

    # PIL releases the GIL while decoding, so threads overlap the work.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(check, table.loc[present, "image_path"]))
    bad = pd.Series(False, index=table.index)
    for (index, image_id), reason in zip(table.loc[present, "id"].items(), reasons):
        if reason:
            report.add_unreadable(image_id, reason)
            bad[index] = True
    return table[~bad]


def corpus_fingerprint(ids: Sequence[str], hashes: Sequence[str]) -> str:
    """Return the SHA-256 over the sorted "id<TAB>content hash" lines of a corpus."""
    if len(ids) != len(hashes):
        raise ValueError(f"corpus_fingerprint needs one hash per id: got {len(ids)} ids and {len(hashes)} hashes")
    lines = sorted(f"{image_id}\t{digest}" for image_id, digest in zip(ids, hashes))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
