"""The stdlib-docstring corpus: deterministic, cleanly split, matching the committed data files."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from step3_trt.tools.corpus import (CALIB_BUCKETS, HELDOUT_BUCKETS, MIN_DOC_CHARS, Splits,
                                    bucket, build_documents, cached_documents,
                                    split_documents)

ROOT = Path(__file__).resolve().parents[2]
TRAINING_JSON = ROOT / "models" / "step3-tiny" / "TRAINING.json"


@pytest.fixture(scope="module")
def docs():
    return list(cached_documents())


def test_build_is_deterministic(docs):
    again = build_documents()
    assert [(d.name, d.text) for d in again] == [(d.name, d.text) for d in docs]


def test_documents_are_unique_clean_and_nonempty(docs):
    assert len(docs) > 1000
    texts = [d.text for d in docs]
    assert len(set(texts)) == len(texts)
    assert all(len(t) >= MIN_DOC_CHARS for t in texts)
    assert all(ch == "\n" or ch.isprintable() for t in texts for ch in t)
    sources = {d.name.split(":")[0] if ":" in d.name else "module" for d in docs}
    assert "module" in sources and "pydoc" in sources


def test_splits_are_disjoint_and_cover_the_corpus(docs):
    s = split_documents(docs)
    train, heldout, calib = ({d.text for d in part} for part in (s.train, s.heldout, s.calib))
    assert not train & heldout and not train & calib and not heldout & calib
    assert len(train) + len(heldout) + len(calib) == len(docs)
    assert all(bucket(t) in HELDOUT_BUCKETS for t in heldout)
    assert all(bucket(t) in CALIB_BUCKETS for t in calib)
    # Sizes the data files are meant to have: held-out ~50-150 KB, calibration ~20-50 KB.
    assert 40_000 < len(Splits.join(s.heldout)) < 200_000
    assert 15_000 < len(Splits.join(s.calib)) < 60_000
    assert len(Splits.join(s.train)) > 10 * len(Splits.join(s.heldout))


def test_bucket_depends_only_on_the_opening():
    head = "Return the thing. " * 10
    assert bucket(head + "one ending") == bucket(head + "another ending")
    assert bucket("  a   b\nc ") == bucket("a b c")


def test_committed_data_files_match_the_split(docs):
    recorded = json.loads(TRAINING_JSON.read_text())["versions"]["python"]
    if recorded != platform.python_version():
        pytest.skip(f"data files were built with Python {recorded}")
    s = split_documents(docs)
    assert (ROOT / "data" / "heldout.txt").read_text(encoding="utf-8") == Splits.join(s.heldout)
    assert (ROOT / "data" / "calib.txt").read_text(encoding="utf-8") == Splits.join(s.calib)
