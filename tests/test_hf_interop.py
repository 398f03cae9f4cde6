"""What a plain Hugging Face user gets from a transfergen folder: the ids transfergen gives, jieba
tokenizers included (through their own class, under trust_remote_code), and the training prompt
format from the chat template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from transfergen.config import ModelConfig, TaskConfig
from transfergen.data.seq2seq import chat_template, encode_example, prompt_ids
from transfergen.data.tasks import Example
from transfergen.errors import UserError
from transfergen.hub import hf_config
from transfergen.model import resolve_shape
from transfergen.tokenizer import TextTokenizer

TATOEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tatoeba-cmn-eng" / "cmn.txt"

# Everyday sentences (the Tatoeba pairs join them when ../shared/data is present).
ZH = ["他们是中国人民的朋友。", "中国人民银行今天宣布降低利率。", "我们明天早上八点在火车站见面。",
      "这本书我已经看了三遍，还是很喜欢。", "请你帮我把窗户关上，外面太冷了。", "他每天晚上都学习两个小时中文。",
      "今天的天气很好，我们去公园散步吧。", "我不知道他为什么没有来上课。", "北京是中华人民共和国的首都。",
      "经济发展需要稳定的社会环境。", "孩子们在院子里高兴地玩耍。", "你能告诉我去图书馆怎么走吗？",
      # jieba's cut depends on context (研究生 | 研究 生命): what no tokenizer.json can express
      "他是一名研究生。", "科学家研究生命的起源。", "我们在拍卖会上买了一个乒乓球拍。", "乒乓球拍卖完了。",
      "他们的和尚在山上。", "结婚的和尚未结婚的都来了。"]
EN = ["They are friends of the Chinese people.", "The central bank cut interest rates today.",
      "We will meet at the station at eight tomorrow morning.", "I have read this book three times.",
      "Please close the window, it is too cold outside.", "He studies Chinese for two hours every evening.",
      "I don't know why he didn't come to class.", "Can you tell me how to get to the library?"]
MIXED = ["我昨天用 Python 写了一个小程序。", "这个 API 返回 404，怎么办？", "我最喜欢的电影是 The Matrix。",
         "明天的 meeting 改到下午三点。", "他在 Google 工作了五年，然后去了北京。", "COVID-19 疫情改变了我们的生活。"]


def sentences() -> tuple[list[str], list[str]]:
    """(evaluation sentences: Chinese, English and mixed; training text for the tokenizers)."""
    evaluation, train = ZH + EN + MIXED, (ZH + EN + MIXED) * 30
    if TATOEBA.is_file():
        rows = [line.split("\t") for line in TATOEBA.read_text(encoding="utf-8-sig").splitlines()
                if line.count("\t") >= 1]
        en, zh = [r[0] for r in rows], [r[1] for r in rows]
        train = train + zh + en
        evaluation = evaluation + zh[::15] + en[::15] + [f"{a} {b}" for a, b in zip(zh[::97], en[::89], strict=False)]
    return evaluation, train


EVAL, TRAIN = sentences()
VOCAB = 3000 if TATOEBA.is_file() else 700


@pytest.fixture(scope="module")
def jieba_dir(tmp_path_factory) -> Path:
    """A jieba tokenizer trained on the sentences, saved as a model folder would hold it."""
    folder = tmp_path_factory.mktemp("jieba") / "tok"
    tok = TextTokenizer.train(TRAIN, VOCAB, jieba=True)
    cfg = TaskConfig(prompt="翻译成英文：{source}", max_source_tokens=10_000)
    tok.set_task_format(cfg.prompt, cfg.max_source_tokens, chat_template(tok, cfg))
    tok.save(folder)
    return folder


def _remote_load(folder: Path, tmp_path: Path) -> dict:
    """Encode EVAL in a fresh interpreter with AutoTokenizer(trust_remote_code=True) alone."""
    (tmp_path / "eval.json").write_text(json.dumps(EVAL, ensure_ascii=False), encoding="utf-8")
    script = (
        "import json, sys\n"
        "from transformers import AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "texts = json.load(open(sys.argv[2], encoding='utf-8'))\n"
        "chats = [tok.apply_chat_template([{'role': 'user', 'content': t}], add_generation_prompt=True,\n"
        "                                 tokenize=True, return_dict=True)['input_ids'] for t in texts]\n"
        "print(json.dumps({'ids': [tok.encode(t) for t in texts], 'batch': tok(texts)['input_ids'],\n"
        "                  'chats': chats, 'cls': type(tok).__name__,\n"
        "                  'transfergen': sorted(m for m in sys.modules if m.startswith('transfergen'))}))\n")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    res = subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "eval.json")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_jieba_tokenizer_round_trip_under_autotokenizer(jieba_dir, tmp_path):
    ours = TextTokenizer.load(jieba_dir)
    assert ours.jieba
    want = ours.encode_batch(EVAL)
    got = _remote_load(jieba_dir, tmp_path)
    assert got["cls"] == "JiebaBPETokenizerFast" and got["transfergen"] == []  # the folder's own code
    assert got["ids"] == want and got["batch"] == want
    cfg = TaskConfig(prompt="翻译成英文：{source}", max_source_tokens=10_000)
    assert got["chats"] == [prompt_ids(ours, cfg, s) for s in EVAL]
    # The control: the same BPE without jieba merges across a word boundary jieba draws.
    plain = PreTrainedTokenizerFast(tokenizer_file=str(jieba_dir / "tokenizer_jieba.json"))
    differ = [s for s, ids in zip(EVAL, want, strict=True) if plain.encode(s) != ids]
    assert differ, "the test would not catch the segmentation being dropped"


def test_jieba_tokenizer_is_refused_without_its_code(jieba_dir, tmp_path):
    """As part of a model folder (config.json present), plain AutoTokenizer fails loudly."""
    model = tmp_path / "model"
    model.mkdir()
    for f in jieba_dir.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    shape = resolve_shape(ModelConfig(preset="tiny"), 1000, 1, 2, 0)
    hf_config(shape).save_pretrained(str(model))
    with pytest.raises((ValueError, OSError)):
        AutoTokenizer.from_pretrained(str(model))
    assert TextTokenizer.load(model).encode("中国人民") == TextTokenizer.load(jieba_dir).encode("中国人民")
    # transfergen passes its own class's auto_map (it imports its installed copy), and no other.
    config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["auto_map"]["AutoTokenizer"][1] = "jieba_tokenizer.Planted"
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(UserError, match="asks to run its own Python code"):
        TextTokenizer.load(model)


def test_plain_tokenizer_round_trip(tmp_path):
    tok = TextTokenizer.train(TRAIN, VOCAB)
    tok.save(tmp_path / "tok")
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert [hf.encode(s) for s in EVAL] == tok.encode_batch(EVAL)
    assert (tmp_path / "tok" / "tokenizer.json").is_file() and not (tmp_path / "tok" / "jieba_tokenizer.py").exists()


def _chat_ids(tok: TextTokenizer, chat: list[dict]) -> list[int]:
    out = tok.hf.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


@pytest.mark.parametrize("prompt", ["{source}", 'Translate "{source}" into German:', "Q: {{x}} }}}} \\{source}\nA:",
                         "把下面的句子翻译成英文：{source}", "{source} {source}"])
@pytest.mark.parametrize("jieba", [False, True])
def test_chat_template_writes_the_training_format(prompt, jieba, tmp_path):
    tok = TextTokenizer.train(TRAIN[:400], 600, jieba=jieba)
    cfg = TaskConfig(prompt=prompt, max_source_tokens=10_000, max_target_tokens=10_000)
    tok.set_task_format(prompt, cfg.max_source_tokens, chat_template(tok, cfg))
    tok.save(tmp_path / "tok")
    tok = TextTokenizer.load(tmp_path / "tok")  # the template survives saving
    assert tok.task_format == {"prompt": prompt, "max_source_tokens": 10_000}
    for src, tgt in zip(EVAL[:30], EVAL[-30:], strict=True):
        assert _chat_ids(tok, [{"role": "user", "content": src}]) == prompt_ids(tok, cfg, src)
        full = _chat_ids(tok, [{"role": "user", "content": src}, {"role": "assistant", "content": tgt}])
        assert full == encode_example(tok, cfg, Example(src, tgt))[0]


def test_generate_source_needs_a_recorded_format(tiny_pretrained, tiny_finetuned, capsys):
    from transfergen.cli import main

    assert main(["generate", "--model", str(tiny_pretrained), "--source", "The king"]) == 2
    assert "records no task format (fine-tuned models do): give --prompt instead" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_finetuned), "--source", "a", "--prompt", "b"]) == 2
    assert "not both" in capsys.readouterr().err
    assert TextTokenizer.load(tiny_finetuned).task_format == {"prompt": "Continue: {source} =>",
                                                             "max_source_tokens": 16}
