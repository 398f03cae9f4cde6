"""Byte-level BPE tokenizer (optionally jieba-aware) behind a 🤗 fast tokenizer.

`TextTokenizer` wraps a `transformers.PreTrainedTokenizerFast` (`.hf`) so a saved
folder loads with plain `AutoTokenizer.from_pretrained`. Training uses byte-level BPE
with the full 256-byte alphabet, so every string is representable (no unknown token)
and `decode(encode(x)) == x`.

jieba mode: Chinese has no spaces, so plain BPE happily merges across word boundaries
("我们喜欢" -> one token). With `jieba=True` the text is first cut into pieces (CJK runs
segmented by jieba, everything else kept whole) and both training and encoding treat
each piece separately, so no token crosses a jieba word boundary. The flag lives in a
side file (`transfergen_tokenizer.json`) because the tokenizer JSON cannot express it.

`transformers` is imported lazily: tokenizer worker processes only need the light
`tokenizers` library (`load_backend` + `encode_texts`), and importing transformers
costs seconds per spawned process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .errors import ConfigError, UserError
from .io import refuse_custom_code

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "<sep>"
SPECIAL_TOKENS = (PAD, BOS, EOS, SEP)  # ids 0..3, in this order
SIDE_FILE = "transfergen_tokenizer.json"

# CJK unified ideographs (+ extension A, compatibility, extensions B..G). Only these runs
# go through jieba; Latin text, digits, punctuation and emoji are kept as-is.
_CJK_RUN = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+)")


def check_vocab_size(vocab_size: int) -> None:
    """A trained BPE holds every byte and the special tokens: `tokenizer.vocab_size` below that
    would be silently raised, so it is refused (before any work: `preflight` calls this)."""
    floor = 256 + len(SPECIAL_TOKENS)
    if vocab_size < floor:
        raise ConfigError(f"config key 'tokenizer.vocab_size': must be >= {floor} "
                          f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")


@functools.cache
def _jieba() -> Any:
    """Import jieba once, silencing its 'Building prefix dict...' chatter."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def jieba_cut(text: str) -> list[str]:
    """jieba's dictionary-only cut of `text` (HMM off: no guessed words), empty pieces dropped.

    The one segmentation the project uses: BPE pre-segmentation here, words for the metrics.
    """
    return [w for w in _jieba().lcut(text, HMM=False) if w]


def jieba_version() -> str:
    """The installed jieba's version (metric signatures record it)."""
    return str(_jieba().__version__)


def jieba_pieces(text: str) -> list[str]:
    """Cut `text` into pieces whose concatenation is `text`; CJK runs are jieba words."""
    pieces: list[str] = []
    # re.split with a capture group alternates [other, cjk, other, cjk, ...].
    for k, run in enumerate(_CJK_RUN.split(text)):
        if not run:
            continue
        if k % 2 == 1:
            pieces.extend(jieba_cut(run))
        else:
            pieces.append(run)
    return pieces


def encode_texts(backend: Tokenizer, texts: Sequence[str], jieba: bool) -> list[list[int]]:
    """Encode `texts` without special tokens; in jieba mode piece by piece (pretokenized)."""
    if jieba:
        # is_pretokenized: each piece is pre-tokenized on its own (the ByteLevel regex
        # still splits inside it), so no merge can span two pieces.
        inputs = [jieba_pieces(t) for t in texts]
        encs = backend.encode_batch(inputs, is_pretokenized=True, add_special_tokens=False)
    else:
        encs = backend.encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encs]


def _plain_backend(backend: Tokenizer) -> Tokenizer:
    """A copy with truncation/padding off, so encodes are full-length and stable."""
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _read_jieba_flag(folder: Path) -> bool:
    side = folder / SIDE_FILE
    if not side.is_file():
        return False
    try:
        return bool(json.loads(side.read_text(encoding="utf-8")).get("jieba", False))
    except (json.JSONDecodeError, AttributeError):
        raise UserError("invalid tokenizer side file", path=str(side)) from None


def load_backend(folder: str | Path) -> tuple[Tokenizer, bool]:
    """Light loader for worker processes: the raw `tokenizers.Tokenizer` + jieba flag."""
    folder = Path(folder)
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return _plain_backend(backend), _read_jieba_flag(folder)


def _bpe_trainer(vocab_size: int, min_frequency: int) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 byte symbols up front: any input byte maps to a token, even unseen ones.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )


class TextTokenizer:
    """A fast HF tokenizer plus the few ids and flags transfergen needs."""

    def __init__(self, hf: PreTrainedTokenizerFast, jieba: bool = False, source: str | None = None):
        if not getattr(hf, "is_fast", False):
            raise UserError("not a fast tokenizer (needs tokenizer.json)", path=source)
        if hf.eos_token_id is None:
            raise UserError("tokenizer has no eos token; transfergen needs one to end documents",
                            path=source)
        self.hf = hf
        self._jieba = bool(jieba)
        self._backend = _plain_backend(hf.backend_tokenizer)
        # Foreign (e.g. GPT-2 style) tokenizers often have only eos: reuse it for bos/pad.
        self._eos = int(hf.eos_token_id)
        self._bos = int(hf.bos_token_id) if hf.bos_token_id is not None else self._eos
        self._pad = int(hf.pad_token_id) if hf.pad_token_id is not None else self._eos
        self._sep = int(hf.sep_token_id) if hf.sep_token_id is not None else None

    # -- construction -------------------------------------------------------

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int, min_frequency: int = 2,
              jieba: bool = False, max_docs: int | None = None) -> TextTokenizer:
        """Train byte-level BPE on (at most `max_docs` of) `docs`."""
        check_vocab_size(vocab_size)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        counter = [0]
        tok.train_from_iterator(_training_inputs(docs, jieba, max_docs, counter),
                                _bpe_trainer(vocab_size, min_frequency))
        if counter[0] == 0:
            raise UserError("no documents to train the tokenizer on")
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, sep_token=SEP,
            # Cleanup would rewrite " ." to "." on decode and break losslessness.
            clean_up_tokenization_spaces=False,
        )
        return cls(hf, jieba=jieba)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Load any local HF tokenizer folder (ours or foreign); must be a fast tokenizer."""
        folder = Path(path)
        if not folder.is_dir():
            raise UserError("tokenizer folder not found", path=str(folder))
        from transformers import AutoTokenizer

        refuse_custom_code(folder)
        try:
            hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(f"could not load a tokenizer ({type(exc).__name__}: {first})",
                            path=str(folder)) from None
        return cls(hf, jieba=_read_jieba_flag(folder), source=str(folder))

    def save(self, path: str | Path) -> None:
        """Write the HF tokenizer files plus the jieba side file into folder `path`."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(folder))
        side = {"jieba": self._jieba, "special_tokens": list(SPECIAL_TOKENS)}
        (folder / SIDE_FILE).write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")

    # -- encode / decode ----------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return encode_texts(self._backend, [text], self._jieba)[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts at once (the Rust side batches them)."""
        return encode_texts(self._backend, texts, self._jieba)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (list, array or 1-D tensor)."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # -- properties ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, special and added tokens included."""
        return len(self.hf)

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        return self._pad

    @property
    def sep_id(self) -> int | None:
        return self._sep

    @property
    def jieba(self) -> bool:
        return self._jieba

    def fingerprint(self) -> str:
        """sha256 of everything that decides the ids: tokenizer JSON, jieba, special ids."""
        h = hashlib.sha256(self._backend.to_str().encode("utf-8"))
        extra = {"jieba": self._jieba, "bos": self._bos, "eos": self._eos, "pad": self._pad}
        h.update(json.dumps(extra, sort_keys=True).encode("utf-8"))
        return h.hexdigest()


def _training_inputs(docs: Iterable[str], jieba: bool, max_docs: int | None,
                     counter: list[int]) -> Iterator[str | list[str]]:
    """Feed for `train_from_iterator`; a list item is a batch of independent sequences."""
    for doc in islice(docs, max_docs):
        counter[0] += 1
        yield jieba_pieces(doc) if jieba else doc
