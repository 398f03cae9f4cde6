"""Byte-level BPE tokenizer (optionally jieba-aware) behind a 🤗 fast tokenizer.

`TextTokenizer` wraps a `transformers.PreTrainedTokenizerFast` (`.hf`) so a saved
folder loads with plain `AutoTokenizer.from_pretrained`. Training uses byte-level BPE
with the full 256-byte alphabet, so every string is representable (no unknown token)
and `decode(encode(x)) == x`.

jieba mode: Chinese has no spaces, so plain BPE happily merges across word boundaries
("我们喜欢" -> one token). With `jieba=True` the text is first cut into pieces (CJK runs
segmented by jieba, everything else kept whole) and both training and encoding treat
each piece separately, so no token crosses a jieba word boundary. `tokenizers` cannot
express that segmentation, so such a folder is saved by `JiebaBPETokenizerFast`
(`jieba_tokenizer.py`): Hugging Face gets the same ids with `trust_remote_code=True` and
refuses the folder without it. The flag also lives in a side file
(`transfergen_tokenizer.json`), with the prompt format a fine-tuned model was trained with.

`transformers` is imported lazily: tokenizer worker processes only need the light
`tokenizers` library (`load_backend` + `encode_texts`), and importing transformers
costs seconds per spawned process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .errors import ConfigError, UserError
from .io import refuse_custom_code
from .jieba_segment import jieba_cut, jieba_pieces, jieba_version

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

__all__ = ["BOS", "EOS", "PAD", "SEP", "SIDE_FILE", "SPECIAL_TOKENS", "TextTokenizer", "backend_file",
           "encode_texts", "jieba_cut", "jieba_pieces", "jieba_version", "load_backend"]

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "<sep>"
SPECIAL_TOKENS = (PAD, BOS, EOS, SEP)  # ids 0..3, in this order
SIDE_FILE = "transfergen_tokenizer.json"
JIEBA_BACKEND_FILE = "tokenizer_jieba.json"  # jieba_tokenizer.BACKEND_FILE (that module imports transformers)


def check_vocab_size(vocab_size: int) -> None:
    """A trained BPE holds every byte and the special tokens: `tokenizer.vocab_size` below that
    would be silently raised, so it is refused (before any work: `preflight` calls this)."""
    floor = 256 + len(SPECIAL_TOKENS)
    if vocab_size < floor:
        raise ConfigError(f"config key 'tokenizer.vocab_size': must be >= {floor} "
                          f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")


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


def _read_side(folder: Path) -> dict[str, Any]:
    """The side file's settings ({} for a foreign tokenizer without one)."""
    side = folder / SIDE_FILE
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UserError("invalid tokenizer side file", path=str(side))
    return data


def backend_file(folder: str | Path) -> Path:
    """The folder's `tokenizers` JSON: tokenizer_jieba.json for a jieba tokenizer, else tokenizer.json."""
    jieba = Path(folder) / JIEBA_BACKEND_FILE
    return jieba if jieba.is_file() else Path(folder) / "tokenizer.json"


def load_backend(folder: str | Path) -> tuple[Tokenizer, bool]:
    """Light loader for worker processes: the raw `tokenizers.Tokenizer` + jieba flag."""
    folder = Path(folder)
    backend = Tokenizer.from_file(str(backend_file(folder)))
    return _plain_backend(backend), bool(_read_side(folder).get("jieba", False))


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

    def __init__(self, hf: PreTrainedTokenizerFast, jieba: bool = False, source: str | None = None,
                 task_format: dict[str, Any] | None = None):
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
        # {"prompt": ..., "max_source_tokens": ...} of the task a fine-tuned model learned
        self.task_format = task_format

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
        if jieba:  # the HF class that pre-segments as `encode` does (saved with its code)
            from .jieba_tokenizer import JiebaBPETokenizerFast as HFClass
        else:
            from transformers import PreTrainedTokenizerFast as HFClass

        hf = HFClass(
            tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, sep_token=SEP,
            # Cleanup would rewrite " ." to "." on decode and break losslessness.
            clean_up_tokenization_spaces=False,
            # What a causal LM takes: no token_type_ids, which generate(**inputs) would refuse.
            model_input_names=["input_ids", "attention_mask"],
        )
        return cls(hf, jieba=jieba)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Load any local HF tokenizer folder (ours or foreign); must be a fast tokenizer."""
        folder = Path(path)
        if not folder.is_dir():
            raise UserError("tokenizer folder not found", path=str(folder))
        refuse_custom_code(folder)  # our own jieba auto_map passes: its class is ours (below)
        side = _read_side(folder)
        jieba = bool(side.get("jieba", False))
        if jieba:  # our own class, imported from transfergen: no code from the folder runs
            from .jieba_tokenizer import JiebaBPETokenizerFast as HFClass
        else:
            from transformers import AutoTokenizer as HFClass
        try:
            hf = HFClass.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(f"could not load a tokenizer ({type(exc).__name__}: {first})",
                            path=str(folder)) from None
        return cls(hf, jieba=jieba, source=str(folder), task_format=side.get("task_format"))

    def save(self, path: str | Path) -> None:
        """Write the HF tokenizer files plus the side file (jieba flag, task format) into `path`."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(folder))
        side = {"jieba": self._jieba, "special_tokens": list(SPECIAL_TOKENS),
                **({"task_format": self.task_format} if self.task_format else {})}
        (folder / SIDE_FILE).write_text(json.dumps(side, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def set_task_format(self, prompt: str, max_source_tokens: int, chat_template: str) -> None:
        """Record the prompt format a model is fine-tuned with: in the side file for transfergen,
        as the tokenizer's `chat_template` for plain transformers (saved with the tokenizer)."""
        self.task_format = {"prompt": prompt, "max_source_tokens": max_source_tokens}
        self.hf.chat_template = chat_template

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
