"""Calibration datasets: sources, tokenization with EOS joins, packing, seeded sampling, errors."""
import json

import pytest
import torch

from slmpack.calibration.datasets import (CalibrationConfig, TextFormat, load_calibration_windows,
                                          load_tokenizer, pack_windows, read_documents,
                                          sample_windows, tokenize_documents)
from slmpack.errors import BadInputError


def _words(start, n):
    return " ".join(f"w{i % 50}" for i in range(start, start + n))


def test_config_validation_names_field(tmp_path):
    for kwargs, field in [({"window": 1}, "window"), ({"num_windows": 0}, "num_windows"),
                          ({"seed": -1}, "seed"), ({"format": "csv"}, "format"),
                          ({"text_field": ""}, "text_field"), ({"window": 8.0}, "window")]:
        with pytest.raises(BadInputError) as e:
            CalibrationConfig(tmp_path, **kwargs)
        assert e.value.code == "E_CALIB_CONFIG" and e.value.details["field"] == field
        assert f"CalibrationConfig.{field}" in str(e.value)
    c = CalibrationConfig(str(tmp_path), format="jsonl")
    assert c.format is TextFormat.JSONL and c.source == tmp_path


def test_tokenizer_and_eos(tokenizer_dir):
    tok, eos = load_tokenizer(tokenizer_dir)
    assert eos == 1
    ids = tokenize_documents(["hello world", "w3 w4 w5"], tok, eos)
    assert ids.tolist() == [52, 53, 1, 5, 6, 7, 1]
    (tokenizer_dir / "config.json").write_text("{}")
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    assert load_tokenizer(tokenizer_dir)[1] == 1
    (tokenizer_dir / "tokenizer_config.json").unlink()
    with pytest.raises(BadInputError) as e:
        load_tokenizer(tokenizer_dir)
    assert e.value.code == "E_CALIB_EOS"
    with pytest.raises(BadInputError) as e:
        load_tokenizer(tokenizer_dir / "missing")
    assert e.value.code == "E_CALIB_TOKENIZER"


def test_three_formats_give_the_same_documents(tmp_path):
    docs = [_words(0, 10), "hello world é", _words(5, 7)]
    d = tmp_path / "dir"
    d.mkdir()
    for i, text in enumerate(docs):
        (d / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    (d / "ignored.md").write_text("not text")
    (d / "99.txt").write_text("   \n")  # whitespace-only: skipped
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(docs)) + "\n\n")
    assert read_documents(CalibrationConfig(d, TextFormat.DIRECTORY)) == docs
    assert read_documents(CalibrationConfig(tmp_path / "c.jsonl", TextFormat.JSONL)) == docs
    (tmp_path / "c.txt").write_text(docs[1])
    assert read_documents(CalibrationConfig(tmp_path / "c.txt")) == [docs[1]]


def test_packing_and_seeded_sampling(tmp_path, tokenizer_dir):
    tok, eos = load_tokenizer(tokenizer_dir)
    ids = torch.arange(23)
    w = pack_windows(ids, 5)
    assert w.shape == (4, 5) and w[1].tolist() == [5, 6, 7, 8, 9]  # tail of 3 dropped
    a, b = sample_windows(w, 3, 7), sample_windows(w, 3, 7)
    assert torch.equal(a, b) and a.shape == (3, 5)
    assert len({tuple(r) for r in a.tolist()}) == 3  # without replacement
    many = pack_windows(torch.arange(100), 5)
    assert not torch.equal(sample_windows(many, 3, 7), sample_windows(many, 3, 8))
    assert sample_windows(w, 10, 0).shape == (4, 5)  # fewer available: all of them
    (tmp_path / "c.txt").write_text(_words(0, 200))
    cfg = CalibrationConfig(tmp_path / "c.txt", window=16, num_windows=5, seed=3)
    x, y = load_calibration_windows(cfg, tok, eos), load_calibration_windows(cfg, tok, eos)
    assert x.dtype == torch.long and x.shape == (5, 16) and torch.equal(x, y)
    z = load_calibration_windows(CalibrationConfig(tmp_path / "c.txt", window=16, num_windows=5,
                                                   seed=4), tok, eos)
    assert not torch.equal(x, z)


def test_errors(tmp_path, tokenizer_dir):
    tok, eos = load_tokenizer(tokenizer_dir)

    def code(cfg):
        with pytest.raises(BadInputError) as e:
            load_calibration_windows(cfg, tok, eos)
        return e.value

    assert code(CalibrationConfig(tmp_path / "none.txt")).code == "E_CALIB_PATH_MISSING"
    assert code(CalibrationConfig(tmp_path, TextFormat.DIRECTORY)).code == "E_CALIB_EMPTY"
    (tmp_path / "empty.txt").write_text(" \n\t")
    assert code(CalibrationConfig(tmp_path / "empty.txt")).code == "E_CALIB_EMPTY"
    (tmp_path / "short.txt").write_text("hello world")
    err = code(CalibrationConfig(tmp_path / "short.txt", window=8))
    assert err.code == "E_CALIB_TOO_FEW_TOKENS" and err.details == {"tokens": 3, "window": 8}
    (tmp_path / "bad.txt").write_bytes(b"hello \xff\xfe world")
    err = code(CalibrationConfig(tmp_path / "bad.txt"))
    assert err.code == "E_CALIB_ENCODING" and err.details["offset"] == 6
    (tmp_path / "c.jsonl").write_text('{"text": "hello"}\n\n{"body": "world"}\n')
    err = code(CalibrationConfig(tmp_path / "c.jsonl", TextFormat.JSONL))
    assert err.code == "E_CALIB_JSONL_FIELD" and err.details["line"] == 3 and ":3:" in str(err)
    (tmp_path / "d.jsonl").write_text('{"text": 5}\n')
    err = code(CalibrationConfig(tmp_path / "d.jsonl", TextFormat.JSONL))
    assert err.code == "E_CALIB_JSONL_FIELD" and "not a string" in str(err)
    (tmp_path / "e.jsonl").write_text('{"text": "a"}\n{oops\n')
    err = code(CalibrationConfig(tmp_path / "e.jsonl", TextFormat.JSONL))
    assert err.code == "E_CALIB_JSONL_PARSE" and err.details["line"] == 2
    assert code(CalibrationConfig(tmp_path / "c.jsonl", TextFormat.DIRECTORY)).code \
        == "E_CALIB_PATH_MISSING"
