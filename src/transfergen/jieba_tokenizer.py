"""`JiebaBPETokenizerFast`: a byte-level BPE tokenizer that pre-segments Chinese with jieba,
in a form Hugging Face runs.

`tokenizers` cannot express jieba's dictionary segmentation (it depends on context), so a
plain `tokenizer.json` would give other ids than training did ("中国人民" as one token where
jieba cuts 中国|人民). A jieba tokenizer's folder therefore holds

    tokenizer_jieba.json   the BPE (a `tokenizers` file under another name, see below)
    tokenizer_config.json  tokenizer_class + auto_map naming this class
    jieba_tokenizer.py, jieba_segment.py   this file and the segmentation it imports

and loads with `AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`, which runs
this class: the same ids as transfergen. Without trust_remote_code transformers finds no
`tokenizer.json` and refuses to load, rather than silently tokenizing differently.

Like `jieba_segment.py`, this file imports nothing from transfergen (HF runs a copy of it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from .jieba_segment import jieba_pieces

BACKEND_FILE = "tokenizer_jieba.json"
SOURCES = ("jieba_tokenizer.py", "jieba_segment.py")  # copied into every saved folder
_HUB_KEYS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def _segment(text: Any) -> Any:
    """A text, a (text, pair) tuple or a batch of them, with every string cut into jieba pieces."""
    if isinstance(text, str):
        return jieba_pieces(text)
    if isinstance(text, (list, tuple)):
        return type(text)(_segment(t) for t in text)
    return text  # None: no pair


class JiebaBPETokenizerFast(PreTrainedTokenizerFast):
    """Encodes each jieba piece on its own (pre-tokenized input), so no token spans two pieces.

    Offsets, as for any pre-tokenized input, are relative to the piece.
    """

    def _encode_plus(self, text: Any, text_pair: Any = None, *args: Any, is_split_into_words: bool = False,
                     **kwargs: Any) -> Any:
        if not is_split_into_words:
            text, text_pair = _segment(text), _segment(text_pair)
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=True, **kwargs)

    def _batch_encode_plus(self, batch_text_or_text_pairs: Any, *args: Any, is_split_into_words: bool = False,
                           **kwargs: Any) -> Any:
        """transformers 4.x routes every encode through here (5.x through `_encode_plus`)."""
        batch = batch_text_or_text_pairs
        if not is_split_into_words:
            batch = _segment(list(batch))
        return super()._batch_encode_plus(batch, *args, is_split_into_words=True, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Load from BACKEND_FILE (a folder saved before it existed keeps its tokenizer.json)."""
        if "tokenizer_file" not in kwargs:
            from transformers.utils import cached_file

            hub = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
            found = cached_file(name_or_path, BACKEND_FILE, _raise_exceptions_for_missing_entries=False, **hub)
            if found is not None:
                kwargs["tokenizer_file"] = found
        return super().from_pretrained(name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any:
        """HF's files, then the BPE renamed, auto_map written and this code copied beside them."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        os.replace(folder / "tokenizer.json", folder / BACKEND_FILE)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = type(self).__name__
        config["auto_map"] = {"AutoTokenizer": [None, f"jieba_tokenizer.{type(self).__name__}"]}
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for name in SOURCES:
            shutil.copyfile(Path(__file__).with_name(name), folder / name)
        return tuple(str(folder / BACKEND_FILE) if Path(f).name == "tokenizer.json" else f for f in files)
