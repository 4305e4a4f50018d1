"""Corpus loaders: the three layouts, column aliases, encodings and the validation report."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.corpus import (
    Corpus,
    CorpusError,
    CorpusOptions,
    ValidationReport,
    artist_slug,
    corpus_fingerprint,
    detect_encoding,
    load_corpus,
    parse_year,
    timeframe_from_year,
)
from core.types import TypeSplit

TABLE_COLUMNS = ["id", "image_path", "title", "artist", "artist_id", "year", "type", "type_group", "school",
                 "timeframe", "style", "description", "type_source"]


def make_image(path: Path, color=(200, 30, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, fmt)
    return path


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


@pytest.fixture
def manifest_corpus(tmp_path: Path) -> Path:
    """A manifest with mixed-case aliased headers and images in a sub-folder."""
    make_image(tmp_path / "img" / "a.jpg", fmt="JPEG")
    make_image(tmp_path / "img" / "b.png")
    make_image(tmp_path / "img" / "c.png")
    write_csv(tmp_path / "labels.csv", [
        ["IMAGE_FILE", "Author", "TITLE", "Date", "TYPE", "School", "Technique"],
        ["img/a.jpg", "BROUWER, Adriaen", "A Boor Asleep", "c. 1650", "Genre", "Flemish", "Oil on wood"],
        ["img/b.png", "Rachel Ruysch", "Flowers", "1640-45", "Still life", "Dutch", "Oil on canvas"],
        ["img/c.png", "", "Untitled", "", "", "", ""],
    ])
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Manifest


def test_manifest_table_columns_and_values(manifest_corpus, caplog):
    with caplog.at_level(logging.INFO, logger="core.corpus"):
        corpus = load_corpus(manifest_corpus)
    assert "Corpus layout: manifest (labels.csv)" in caplog.text
    assert "utf-8" in caplog.text  # the encoding used is logged

    assert isinstance(corpus, Corpus)
    assert corpus.layout == "manifest"
    assert corpus.name == manifest_corpus.name
    table = corpus.table
    expected_columns = TABLE_COLUMNS[:10] + ["timeframe_source"] + TABLE_COLUMNS[10:]
    assert list(table.columns[: len(expected_columns)]) == expected_columns
    assert table["id"].tolist() == ["img/a.jpg", "img/b.png", "img/c.png"]
    assert table["image_path"].tolist() == [str(manifest_corpus / "img" / n) for n in ("a.jpg", "b.png", "c.png")]
    assert str(table["year"].dtype) == "Int64"
    assert table["year"].tolist()[:2] == [1650, 1640]
    assert pd.isna(table["year"].iloc[2])
    assert table["type"].tolist() == ["genre", "still-life", ""]
    assert table["type_group"].tolist() == ["additive", "additive", ""]
    assert table["artist_id"].tolist() == ["adriaen-brouwer", "rachel-ruysch", ""]
    assert table["timeframe"].tolist() == ["", "", ""]
    assert table["style"].tolist() == ["", "", ""]
    assert table["orig:Technique"].tolist() == ["Oil on wood", "Oil on canvas", ""]
    assert table["orig:Date"].tolist() == ["c. 1650", "1640-45", ""]

    report = corpus.report
    assert report.found_columns["image"] == "IMAGE_FILE"
    assert report.found_columns["artist"] == "Author"
    assert "timeframe" in report.missing_columns
    assert "artist_id" not in report.missing_columns
    assert report.summary() == "3 rows, 0 skipped (0 missing files, 0 duplicate ids, 0 unreadable)"


@pytest.mark.parametrize("delimiter", ["\t", ";"])
def test_manifest_delimiter_is_sniffed(tmp_path, delimiter):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "list.csv", [["Path", "Painter"], ["a.png", "Rubens, Peter Paul"]], delimiter=delimiter)
    table = load_corpus(tmp_path / "list.csv").table
    assert table["artist"].tolist() == ["Rubens, Peter Paul"]


def test_alias_matching_ignores_case_and_separators(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "m.csv", [["Image File", "ARTIST-ID", "time frame", "TYPE_SOURCE"],
                                   ["a.png", "p-1", "1601-1650", "wga"]])
    corpus = load_corpus(tmp_path)
    row = corpus.table.iloc[0]
    assert (row["artist_id"], row["timeframe"], row["type_source"]) == ("p-1", "1601-1650", "wga")
    assert row["timeframe_source"] == "catalogue"


def test_type_wins_over_genre_columns(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "m.csv", [["image", "wikiart_genre", "type"], ["a.png", "genre_painting", "religious"]])
    assert load_corpus(tmp_path).table["type"].tolist() == ["religious"]


def test_explicit_column_mapping(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "m.csv", [["pic", "who", "author", "kind"], ["a.png", "Vermeer", "ignored", "Interior"]])
    options = CorpusOptions(columns={"image": "PIC", "artist": "who", "type": "kind"})
    row = load_corpus(tmp_path / "m.csv", options).table.iloc[0]
    assert (row["artist"], row["type"], row["type_group"]) == ("Vermeer", "interior", "additive")

    with pytest.raises(CorpusError) as info:
        load_corpus(tmp_path / "m.csv", CorpusOptions(columns={"image": "pic", "artist": "painter_name"}))
    message = str(info.value)
    assert "painter_name" in message
    assert "pic, who, author, kind" in message

    with pytest.raises(CorpusError, match="valid fields are image, title"):
        load_corpus(tmp_path / "m.csv", CorpusOptions(columns={"painting": "pic"}))


def test_missing_image_column_error(tmp_path):
    write_csv(tmp_path / "m.csv", [["picture_name", "artist"], ["a.png", "X"]])
    with pytest.raises(CorpusError) as info:
        load_corpus(tmp_path / "m.csv")
    message = str(info.value)
    assert "no image column" in message
    assert "image_file" in message
    assert "jpg_link" in message
    assert "columns found: picture_name, artist" in message
    assert "columns={'image': NAME}" in message
    assert "--column image=NAME" in message
    # Loading the folder with the layout forced gives the same explanation.
    with pytest.raises(CorpusError, match="no image column"):
        load_corpus(tmp_path, CorpusOptions(layout="manifest"))


def test_missing_files_and_duplicate_ids_are_reported(tmp_path):
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png")
    write_csv(tmp_path / "m.csv", [["image", "title"], ["a.png", "first"], ["./a.png", "again"],
                                   ["gone.png", "lost"], ["b.png", "kept"], ["", "no image"]])
    corpus = load_corpus(tmp_path)
    report = corpus.report
    assert corpus.table["id"].tolist() == ["a.png", "b.png"]
    assert corpus.table["title"].tolist() == ["first", "kept"]
    assert report.duplicate_ids == ["a.png"]
    assert [id for id, _ in report.missing_files] == ["gone.png", "<row 6: no image>"]
    assert report.missing_files[0][1] == str(tmp_path / "gone.png")
    assert report.skipped_count == 3
    assert report.summary() == "2 rows, 3 skipped (2 missing files, 1 duplicate ids, 0 unreadable)"

    as_dict = report.to_dict()
    assert as_dict["duplicate_ids"] == ["a.png"]
    assert as_dict["missing_files"][0]["id"] == "gone.png"
    markdown = report.to_markdown()
    assert "## Missing files (2)" in markdown
    assert "gone.png" in markdown
    assert "## Duplicate ids" in markdown

    report.add_unreadable("b.png", "cannot decode")
    assert report.summary() == "1 rows, 4 skipped (2 missing files, 1 duplicate ids, 1 unreadable)"


def test_require_images_false_keeps_missing_rows(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "m.csv", [["image"], ["a.png"], ["gone.png"]])
    corpus = load_corpus(tmp_path, CorpusOptions(require_images=False))
    assert corpus.table["id"].tolist() == ["a.png", "gone.png"]
    assert corpus.report.summary() == "2 rows, 0 skipped (1 missing files, 1 kept, 0 duplicate ids, 0 unreadable)"


def test_all_files_missing_raises_with_hint(tmp_path):
    write_csv(tmp_path / "m.csv", [["image"], ["gone.png"]])
    with pytest.raises(CorpusError) as info:
        load_corpus(tmp_path)
    assert "gone.png" in str(info.value)
    assert "check that the images sit where the manifest says" in str(info.value)
    assert info.value.report.missing_files


def test_check_images_reports_unreadable(tmp_path):
    make_image(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_text("not an image")
    write_csv(tmp_path / "m.csv", [["image"], ["good.png"], ["bad.jpg"]])
    assert len(load_corpus(tmp_path).table) == 2  # not decoded by default
    corpus = load_corpus(tmp_path, CorpusOptions(check_images=True))
    assert corpus.table["id"].tolist() == ["good.png"]
    assert corpus.report.unreadable[0][0] == "bad.jpg"
    assert "not an image" in corpus.report.unreadable[0][1]


def test_header_only_manifest_raises(tmp_path):
    write_csv(tmp_path / "m.csv", [["image", "title"]])
    with pytest.raises(CorpusError, match="no rows"):
        load_corpus(tmp_path / "m.csv")


def test_urls_map_to_their_path_under_the_root(tmp_path):
    make_image(tmp_path / "art" / "a" / "x.jpg", fmt="JPEG")
    write_csv(tmp_path / "m.csv", [["jpg_link"], ["http://www.wga.hu/art/a/x.jpg"]])
    assert load_corpus(tmp_path).table["id"].tolist() == ["art/a/x.jpg"]


def test_derive_timeframe_option(tmp_path):
    for name in "abc":
        make_image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "m.csv", [["image", "year", "timeframe"], ["a.png", "1600", ""],
                                   ["b.png", "1650", "1651-1700"], ["c.png", "", ""]])
    plain = load_corpus(tmp_path).table
    assert plain["timeframe"].tolist() == ["", "1651-1700", ""]
    assert plain["timeframe_source"].tolist() == ["", "catalogue", ""]
    derived = load_corpus(tmp_path, CorpusOptions(derive_timeframe=True)).table
    assert derived["timeframe"].tolist() == ["1551-1600", "1651-1700", ""]
    assert derived["timeframe_source"].tolist() == ["year", "catalogue", ""]


def test_timeframe_from_year():
    assert timeframe_from_year(1601) == "1601-1650"
    assert timeframe_from_year(1650) == "1601-1650"
    assert timeframe_from_year(1600) == "1551-1600"
    assert timeframe_from_year(1651) == "1651-1700"
    assert timeframe_from_year(None) == ""
    assert timeframe_from_year(pd.NA) == ""


@pytest.mark.parametrize("text, year", [("c. 1650", 1650), ("1640-45", 1640), ("June 1889, Saint-Rémy", 1889),
                                        ("1660s", 1660), ("16th century", None), ("-", None), ("", None)])
def test_parse_year(text, year):
    assert parse_year(text) == year


def test_artist_slug():
    assert artist_slug("BROUWER, Adriaen") == artist_slug("Adriaen Brouwer") == "adriaen-brouwer"
    assert artist_slug("DÜRER, Albrecht") == "albrecht-durer"
    assert artist_slug("MASTER of Flémalle") == "master-of-flemalle"


def test_custom_type_split(manifest_corpus):
    split = TypeSplit(additive=("still-life",), narrative=("genre",))
    table = load_corpus(manifest_corpus, CorpusOptions(split=split)).table
    assert table["type_group"].tolist() == ["narrative", "additive", ""]


# ---------------------------------------------------------------------------------------------
# Encodings

NAMES = ["Gérard Dürer", "Velázquez, Diego", "Noël Coypel"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "cp850"])
def test_encoding_detection(tmp_path, encoding):
    make_image(tmp_path / "a.png")
    rows = [["image", "artist"]] + [["a.png", name] for name in NAMES]
    write_csv(tmp_path / "m.csv", rows, encoding=encoding)
    detected, _ = detect_encoding((tmp_path / "m.csv").read_bytes())
    assert detected == encoding
    corpus = load_corpus(tmp_path, CorpusOptions(require_images=False))
    assert corpus.table["artist"].tolist() == NAMES[:1]  # later rows repeat the id
    assert "image" in corpus.report.found_columns  # the BOM does not hide the first header
    assert encoding in corpus.report.encoding


def test_cp850_is_chosen_even_when_cp1252_decodes():
    data = "Gérard, Café à Noël\n".encode("cp850")  # é à ë are punctuation bytes in cp1252
    data.decode("cp1252")  # no error: the choice rests on the heuristic
    assert detect_encoding(data)[0] == "cp850"
    assert detect_encoding("Gérard, Café à Noël, “quoted” – ok\n".encode("cp1252"))[0] == "cp1252"


def test_given_encoding_is_used(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "m.csv", [["image", "artist"], ["a.png", "Dürer"]], encoding="cp850")
    table = load_corpus(tmp_path / "m.csv", CorpusOptions(encoding="latin-1")).table
    assert table["artist"].tolist() == ["D\x81rer"]  # as asked, even if wrong
    with pytest.raises(CorpusError, match="Cannot decode the CSV as utf-8"):
        load_corpus(tmp_path / "m.csv", CorpusOptions(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# SemArt

SEMART_HEADER = ["IMAGE_FILE", "DESCRIPTION", "AUTHOR", "TITLE", "TECHNIQUE", "DATE", "TYPE", "SCHOOL", "TIMEFRAME"]


def make_semart(root: Path, splits=("val", "test")) -> Path:
    make_image(root / "Images" / "00001-a.jpg", fmt="JPEG")
    make_image(root / "Images" / "00002-b.jpg", fmt="JPEG")
    rows = {
        "train": [["00001-a.jpg", "A comment, with commas.", "GÉRARD, Marguerite", "The Letter", "Oil", "c. 1790",
                   "genre", "French", "1751-1800"]],
        "val": [["00002-b.jpg", "Saints.", "ZURBARÁN, Francisco de", "Saint", "Oil", "1630s", "religious", "Spanish",
                 "1601-1650"]],
        "test": [["00003-c.jpg", "Gone.", "DÜRER, Albrecht", "Hare", "Watercolour", "1502", "study", "German",
                  "1501-1550"]],
    }
    for split in splits:
        write_csv(root / f"semart_{split}.csv", [SEMART_HEADER] + rows[split], delimiter="\t", encoding="cp1252")
    return root


def test_semart_layout(tmp_path, caplog):
    make_semart(tmp_path, splits=("train", "val", "test"))
    with caplog.at_level(logging.INFO, logger="core.corpus"):
        corpus = load_corpus(tmp_path)
    assert "Corpus layout: semart (semart_train.csv, semart_val.csv, semart_test.csv)" in caplog.text
    table = corpus.table
    assert corpus.layout == "semart"
    assert table["id"].tolist() == ["Images/00001-a.jpg", "Images/00002-b.jpg"]
    assert table["split"].tolist() == ["train", "val"]
    assert table["artist"].tolist() == ["GÉRARD, Marguerite", "ZURBARÁN, Francisco de"]
    assert table["description"].iloc[0] == "A comment, with commas."
    assert table["year"].tolist() == [1790, 1630]
    assert table["type_source"].tolist() == ["semart", "semart"]
    assert table["orig:TECHNIQUE"].tolist() == ["Oil", "Oil"]
    assert corpus.report.missing_files == [("Images/00003-c.jpg", str(tmp_path / "Images" / "00003-c.jpg"))]


def test_semart_any_subset_of_splits(tmp_path):
    make_semart(tmp_path, splits=("val",))
    corpus = load_corpus(tmp_path)
    assert corpus.table["split"].tolist() == ["val"]


# ---------------------------------------------------------------------------------------------
# Folder per class


def make_folders(root: Path) -> Path:
    make_image(root / "Still Life" / "a.png")
    make_image(root / "Still Life" / "nested" / "b.jpg", fmt="JPEG")
    make_image(root / "religious" / "c.png")
    (root / "religious" / "notes.txt").write_text("not an image")
    return root


def test_folder_per_class(tmp_path):
    corpus = load_corpus(make_folders(tmp_path))
    table = corpus.table
    assert corpus.layout == "folders"
    assert table["id"].tolist() == ["Still Life/a.png", "Still Life/nested/b.jpg", "religious/c.png"]
    assert table["type"].tolist() == ["still-life", "still-life", "religious"]
    assert table["type_group"].tolist() == ["additive", "additive", "narrative"]
    assert table["type_source"].tolist() == ["folder"] * 3
    assert table["orig:folder"].tolist() == ["Still Life", "Still Life", "religious"]


def test_folder_per_class_other_attribute(tmp_path):
    make_image(tmp_path / "Dutch" / "a.png")
    make_image(tmp_path / "Flemish" / "b.png")
    table = load_corpus(tmp_path, CorpusOptions(class_attribute="school")).table
    assert table["school"].tolist() == ["Dutch", "Flemish"]
    assert table["type"].tolist() == ["", ""] and table["type_source"].tolist() == ["", ""]
    with pytest.raises(CorpusError, match="choose one of type, artist, school, timeframe, style"):
        load_corpus(tmp_path, CorpusOptions(class_attribute="genus"))


# ---------------------------------------------------------------------------------------------
# Layout detection


def test_layout_detection_order(tmp_path, caplog):
    make_folders(tmp_path)
    make_semart(tmp_path)
    write_csv(tmp_path / "labels.csv", [["image", "type"], ["religious/c.png", "religious"]])
    write_csv(tmp_path / "notes.csv", [["painter", "comment"], ["X", "no image column here"]])

    assert load_corpus(tmp_path).layout == "manifest"
    (tmp_path / "labels.csv").unlink()
    assert load_corpus(tmp_path).layout == "semart"
    for split_file in tmp_path.glob("semart_*.csv"):
        split_file.unlink()
    assert load_corpus(tmp_path).layout == "folders"


def test_layout_can_be_forced(tmp_path):
    make_folders(tmp_path)
    make_semart(tmp_path)
    write_csv(tmp_path / "labels.csv", [["image"], ["religious/c.png"]])
    assert load_corpus(tmp_path, CorpusOptions(layout="folders")).layout == "folders"
    assert load_corpus(tmp_path, CorpusOptions(layout="semart")).layout == "semart"
    semart_file = load_corpus(tmp_path / "semart_val.csv", CorpusOptions(layout="semart"))
    assert semart_file.table["split"].tolist() == ["val"]
    # A CSV path is a manifest unless told otherwise: SemArt file names are then relative to the CSV.
    assert load_corpus(tmp_path / "labels.csv").layout == "manifest"
    with pytest.raises(CorpusError, match="choose one of manifest, semart, folders"):
        load_corpus(tmp_path, CorpusOptions(layout="zip"))


def test_several_manifests_need_a_choice(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "one.csv", [["image"], ["a.png"]])
    write_csv(tmp_path / "two.csv", [["file"], ["a.png"]])
    with pytest.raises(CorpusError) as info:
        load_corpus(tmp_path)
    assert "one.csv, two.csv" in str(info.value) and "--manifest" in str(info.value)
    assert load_corpus(tmp_path, CorpusOptions(manifest="two.csv")).report.found_columns["image"] == "file"


def test_empty_folder_raises_with_what_was_looked_for(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(CorpusError) as info:
        load_corpus(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "image column" in message and "semart_*.csv" in message and ".jpg" in message
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")


def test_corpus_fingerprint():
    first = corpus_fingerprint(["a.jpg", "b.jpg"], ["h1", "h2"])
    assert first == corpus_fingerprint(["b.jpg", "a.jpg"], ["h2", "h1"])
    assert first != corpus_fingerprint(["a.jpg", "b.jpg"], ["h1", "h3"])
    assert len(first) == 64
    with pytest.raises(ValueError):
        corpus_fingerprint(["a.jpg"], [])


def test_empty_report_markdown():
    report = ValidationReport(source="x", rows_read=2)
    assert report.summary() == "2 rows, 0 skipped (0 missing files, 0 duplicate ids, 0 unreadable)"
    assert "None." in report.to_markdown()


# ---------------------------------------------------------------------------------------------
# Real catalogue files (need $SEMGAP_DATA)


def test_real_wikiart_manifest(wikiart_root):
    corpus = load_corpus(wikiart_root)
    assert corpus.layout == "manifest" and corpus.name == "wikiart-baroque-rococo"
    assert len(corpus.table) == 6329
    assert corpus.report.summary() == "6329 rows, 0 skipped (0 missing files, 0 duplicate ids, 0 unreadable)"
    assert corpus.table["id"].is_unique and corpus.table["id"].str.startswith("images/").all()
    assert corpus.table["type"].value_counts()["portrait"] == 2134
    assert (corpus.table["type"] == "").sum() == 411
    assert corpus.table["artist_id"].nunique() == 94
    assert "orig:wikiart_genre" in corpus.table.columns


def test_real_semart_val_and_test(semgap_data):
    corpus = load_corpus(semgap_data / "metadata" / "semart", CorpusOptions(require_images=False))
    table = corpus.table
    assert table["split"].value_counts().to_dict() == {"val": 1069, "test": 1069}
    assert len(corpus.report.missing_files) == 2138  # no Images/ folder here: every file reported
    assert "cp1252" in corpus.report.encoding
    assert set(table["type"]) <= set(TypeSplit().types) | {"study", "other"}
    assert "DÜRER, Albrecht" in set(table["artist"])
    assert "VELÁZQUEZ, Diego Rodriguez de Silva y" in set(table["artist"])
    assert table["id"].str.startswith("Images/").all()


def test_real_wga_catalogue(semgap_data):
    corpus = load_corpus(semgap_data / "metadata" / "wga" / "paintings_data.csv", CorpusOptions(require_images=False))
    table = corpus.table
    assert len(table) == 9849 and len(corpus.report.missing_files) == 9849
    assert corpus.report.found_columns["image"] == "jpg_link"
    assert "cp850" in corpus.report.encoding
    assert "CÉZANNE, Paul" in set(table["artist"])
    assert table["type"].value_counts()["religious"] == 3505
    with pytest.raises(CorpusError, match="9849 missing files"):
        load_corpus(semgap_data / "metadata" / "wga" / "paintings_data.csv")
