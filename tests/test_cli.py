"""Command-line checks that must fail before any model loads, with a message naming the fix."""
from __future__ import annotations

import pytest

from core.cli import main


def test_unknown_model_rejected_first(tmp_path, capsys):
    assert main(["embed", "--corpus", str(tmp_path), "--models", "effnet-lite0,nosuch", "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "Unknown model(s) nosuch" in message
    assert "effnet-lite0" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["embed", "--corpus", "x", "--batch-size", "0"], ["search", "--index", "x", "--model", "m", "--id", "a", "-k", "-5"]])
def test_non_positive_numbers_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "expected a positive integer" in capsys.readouterr().err


def test_missing_indexes_folder_named(tmp_path, capsys):
    assert main(["evaluate", "--indexes", str(tmp_path / "nope"), "--out", str(tmp_path / "results")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["project", "--indexes", str(tmp_path), "--out", str(tmp_path / "results")]) == 2
    assert "No index under" in capsys.readouterr().err


def test_empty_text_query_rejected(tmp_path, capsys):
    assert main(["search", "--index", str(tmp_path), "--model", "m", "--text", ""]) == 2
    assert "text query is empty" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_binary_csv_named_in_error(tmp_path, capsys):
    (tmp_path / "labels.csv").write_bytes(b'image,"title\r\x00\x9f\xff\n' * 20)
    assert main(["embed", "--corpus", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "labels.csv" in capsys.readouterr().err


def test_non_checkpoint_weights_named(tmp_path, capsys):
    from core.encoders.weights import load_state_dict_file

    (tmp_path / "notes.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ValueError, match="notes.pt is not a readable PyTorch checkpoint"):
        load_state_dict_file(tmp_path / "notes.pt")


def test_short_csv_rows_warned(tmp_path, caplog):
    from PIL import Image

    from core.corpus import load_corpus

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("image,title,artist,type\na.png,Venus\nb.png,Flowers,Ruysch,still-life\n")
    with caplog.at_level("WARNING"):
        corpus = load_corpus(tmp_path)
    assert len(corpus.table) == 2
    assert "1 rows have fewer than the header's 4 fields (lines 2)" in caplog.text
