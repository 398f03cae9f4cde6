"""The drill's faults: kill -9 in the middle of a write, a full disk (a small tmpfs, mounted in a
user namespace where the machine allows it), a read-only output folder, two writers on one
run, a study killed under its runs, a resume that would change the run, and a model folder
that asks to run its own code. Bad values are the table in test_drill_values.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from transfergen.checkpoint import latest_checkpoint, load_training_state
from transfergen.cli import main
from transfergen.folders import lock_holder
from transfergen.hub import load_model
from transfergen.io import read_metrics

from conftest import make_corpus
from test_cli import TINY_FLAGS

FLAGS = [*TINY_FLAGS, "--train.save_every=10", "--train.threads=1", "--data.num_workers=1"]


def pretrain(corpus: Path, out: Path, *flags: str) -> list[str]:
    return ["pretrain", "--corpus", str(corpus), *FLAGS, "--out", str(out), *flags]


def python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (same environment: PYTHONPATH reaches transfergen)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


def errors(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("transfergen: error:")]


# ---------------------------------------------------------------------------
# kill -9 in the middle of a write


KILL_IN_TORCH_SAVE = """
import os, signal, sys, torch
real = torch.save
def torn(obj, f, *args, **kwargs):
    if ".tmp-step-0000020" in str(f):  # the second checkpoint: half a file, then kill -9
        open(f, "wb").write(b"half an optimizer state")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)
torch.save = torn
from transfergen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_a_checkpoint_write_keeps_the_last_and_resume_is_exact(corpus, tmp_path, capsys):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(pretrain(corpus, full, "--train.max_steps=30")) == 0
    res = python(KILL_IN_TORCH_SAVE, *pretrain(corpus, killed, "--train.max_steps=30"))
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    last = latest_checkpoint(killed)
    assert last.name == "step-0000010" and load_training_state(last)[0]["step"] == 10
    assert [p.name[:17] for p in (killed / "checkpoints").glob(".tmp-*")] == [".tmp-step-0000020"]
    assert (killed / "model.safetensors").read_bytes() == (last / "model.safetensors").read_bytes()
    load_model(killed)  # the run folder is a loadable model all along
    (killed / "notes.tmp").write_text("the user's own file")
    capsys.readouterr()
    assert main(pretrain(corpus, killed, "--train.max_steps=30", "--resume")) == 0  # the kill freed the lock
    assert "removed what a killed run left: checkpoints/.tmp-step-0000020-" in capsys.readouterr().err
    assert not list((killed / "checkpoints").glob(".tmp-*"))
    assert (killed / "notes.tmp").read_text() == "the user's own file"  # only our own temporaries go
    assert losses(killed) == losses(full) and sorted(losses(full)) == list(range(1, 31))
    assert [r["event"] for r in read_metrics(killed) if "event" in r] == ["setup"]  # no second setup record


KILL_IN_CACHE_BUILD = """
import os, signal, sys
import transfergen.data.packing as packing
def torn(data, tokenizer, dtype, tmp):
    (tmp / "train.bin").write_bytes(bytes(1000))  # a partial token file, then kill -9
    os.kill(os.getpid(), signal.SIGKILL)
packing._write_streams = torn
from transfergen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_the_token_cache_build_is_cleaned_at_the_next_start(corpus, tmp_path):
    run = tmp_path / "run"
    res = python(KILL_IN_CACHE_BUILD, *pretrain(corpus, run, "--train.max_steps=5"))
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert len(list((run / "data").glob(".build-*"))) == 1 and not (run / "data" / "meta.json").exists()
    assert main(pretrain(corpus, run, "--train.max_steps=5")) == 0
    assert not list((run / "data").glob(".build-*")) and (run / "data" / "meta.json").is_file()


def test_a_record_torn_by_a_kill_is_dropped_on_resume(corpus, tmp_path):
    run = tmp_path / "run"
    assert main(pretrain(corpus, run, "--train.max_steps=10")) == 0
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 11, "loss": 4.')  # kill -9 in the middle of an append
    assert main(pretrain(corpus, run, "--train.max_steps=12", "--resume")) == 0
    assert sorted(losses(run)) == list(range(1, 13))


# ---------------------------------------------------------------------------
# a full disk and a read-only output folder, on tmpfs mounts of our own


IN_NAMESPACE = """
import contextlib, io, json, os, shutil, subprocess, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
mnt, ro, report = Path(spec["mnt"]), Path(spec["ro"]), {}
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
from transfergen.cli import main

def cli(*args):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, [ln for ln in err.getvalue().splitlines() if ln.startswith("transfergen: error:")]

run = mnt / "run"
train = ["pretrain", *spec["flags"], "--out", str(run)]
report["first"] = cli(*train, "--train.max_steps=10")
with open(mnt / "filler", "wb") as f:  # the disk fills up: 150 kB left, less than a checkpoint
    f.write(bytes(shutil.disk_usage(mnt).free - 150_000))
report["full"] = cli(*train, "--train.max_steps=20", "--resume")
report["left"] = sorted(p.name for p in (run / "checkpoints").iterdir())
report["top_is_step10"] = ((run / "model.safetensors").read_bytes()
                           == (run / "checkpoints" / "step-0000010" / "model.safetensors").read_bytes())
os.remove(mnt / "filler")  # space is back
report["resumed"] = cli(*train, "--train.max_steps=20", "--resume")
shutil.copytree(run, spec["copy"])
cache = mnt / "cache"  # a token cache on a filesystem too small for it
cache.mkdir()
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(cache)], check=True)
big = ["--corpus", spec["big"], "--out", str(mnt / "run2"), "--data.cache_dir", str(cache), "--train.max_steps=2"]
report["cache_full"] = cli("pretrain", *spec["flags"], *big)
report["cache_left"] = sorted(p.name for p in cache.iterdir())
subprocess.run(["mount", "-o", "remount,size=2m", str(cache)], check=True)
report["cache_again"] = cli("pretrain", *spec["flags"], *big)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], check=True)
import transfergen.hub as hub
def loaded(*args, **kwargs):
    raise AssertionError("the model was loaded before the output folder was checked")
hub.load_model = loaded
report["ro_evaluate"] = cli("evaluate", "--model", str(run), "--task", spec["task"], "--out", str(ro / "eval"))
report["ro_pretrain"] = cli("pretrain", *spec["flags"], "--out", str(ro / "run"))
print("REPORT " + json.dumps(report))
"""


def _namespace_skip_reason(tmp_path: Path) -> str | None:
    """Why a tmpfs cannot be mounted here (None when it can): unshare -Urm needs user namespaces."""
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        res = subprocess.run(["unshare", "-Urm", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    return None if res.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {res.stderr.strip()}"


def test_full_disk_during_a_checkpoint_then_resume_once_space_is_back(corpus, tmp_path, capsys):
    reason = _namespace_skip_reason(tmp_path)
    if reason:
        pytest.skip(reason)
    task = tmp_path / "task.yaml"
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"source": f"a {i}", "target": f"b {i}"}) + "\n"
                                                  for i in range(20)))
    task.write_text(yaml.safe_dump({"reader": "jsonl", "path": str(tmp_path / "pairs.jsonl"), "val_size": 2,
                                    "test_size": 2, "max_source_tokens": 16}))
    spec = {"mnt": str(tmp_path / "mnt"), "ro": str(tmp_path / "ro"), "copy": str(tmp_path / "copy"),
            "task": str(task), "flags": ["--corpus", str(corpus), *FLAGS],
            "big": str(make_corpus(tmp_path / "big.txt", n_lines=3000))}
    for d in ("mnt", "ro"):
        (tmp_path / d).mkdir()
    res = subprocess.run(["unshare", "-Urm", sys.executable, "-c", IN_NAMESPACE, json.dumps(spec)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.split("REPORT ", 1)[1])
    assert report["first"] == [0, []]
    rc, lines = report["full"]
    assert rc == 2 and len(lines) == 1, lines
    assert ("could not write checkpoint step-0000020: No space left on device; the last complete checkpoint, "
            "step-0000010, is intact: free space, then continue with --resume") in lines[0]
    assert report["left"] == ["step-0000010"] and report["top_is_step10"]  # nothing written was damaged
    assert report["resumed"] == [0, []]
    # the same two legs on a disk that never filled give the same run, bit for bit
    ref = tmp_path / "ref"
    assert main(pretrain(corpus, ref, "--train.max_steps=10")) == 0
    assert main(pretrain(corpus, ref, "--train.max_steps=20", "--resume")) == 0
    copy = tmp_path / "copy"
    assert losses(copy) == losses(ref) and sorted(losses(copy)) == list(range(1, 21))
    assert (copy / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    rc, lines = report["cache_full"]
    assert rc == 2 and len(lines) == 1 and ("could not build the token cache: No space left on device; free space "
                                            "and run again") in lines[0], lines
    assert report["cache_left"] == [".lock"] and report["cache_again"] == [0, []]  # no .build-* kept the disk full
    for key in ("ro_evaluate", "ro_pretrain"):
        rc, lines = report[key]
        assert rc == 2 and len(lines) == 1 and "cannot write the --out folder: Read-only file system" in lines[0]


# ---------------------------------------------------------------------------
# one writer per run folder; a study's runs die with it


def _wait_for(predicate, seconds: float = 120.0) -> None:
    end = time.time() + seconds
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.2)


def test_a_second_writer_is_refused_naming_the_holder_and_the_lock_dies_with_it(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(pretrain(corpus, run, "--train.max_steps=10")) == 0
    cmd = [sys.executable, "-m", "transfergen", *pretrain(corpus, run, "--train.max_steps=100000", "--resume")]
    holder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: lock_holder(run) == holder.pid or holder.poll() is not None)
        assert holder.poll() is None
        capsys.readouterr()
        for extra in (["--resume"], []):  # a second resume, and a fresh run racing for the same --out
            assert main(pretrain(corpus, run, "--train.max_steps=10", *extra)) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"transfergen: error: {run}: another process (PID {holder.pid}) is writing this run; "
                           "wait for it to finish or stop it, then run again"]
    finally:
        holder.kill()
        holder.wait()
    assert main(pretrain(corpus, run, "--train.max_steps=10", "--resume")) == 0  # kill -9 released the lock
    assert lock_holder(run) == os.getpid()


STUDY_PARENT = """
import sys, time
from transfergen.study.pool import launch
child = launch([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie waiting for its reaper is dead


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_study_run_dies_with_the_study_process():
    parent = subprocess.Popen([sys.executable, "-c", STUDY_PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no handler can run: only the kernel can take the child along
        parent.wait()
        _wait_for(lambda: not _alive(child), seconds=10)
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # never leave a sleeper behind, even when the test fails


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_a_study_kills_its_run_and_a_rerun_finishes_it(tiny_pretrained, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": f"a {i}", "target": f"b {i}"}) + "\n" for i in range(60)))
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({"reader": "jsonl", "path": str(pairs), "val_size": 4,
                                                        "test_size": 4, "max_source_tokens": 16,
                                                        "max_target_tokens": 8, "metrics": ["bleu"]}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "task": str(tmp_path / "task.yaml"), "pretrained": str(tiny_pretrained), "arms": [{"name": "full"}],
        "base": {"train": {"max_steps": 100000, "batch_size": 4, "save_every": 5, "eval_every": 100000,
                           "threads": 1}, "eval": {"examples": 2, "max_new_tokens": 2}},
        "sizes": [20], "test_examples": 2, "analysis_texts": 2}))
    out, worker = tmp_path / "out", None
    run = out / "runs" / "full" / "n20" / "s0"
    parent = subprocess.Popen([sys.executable, "-m", "transfergen", "study", str(study), "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: lock_holder(run) not in (None, parent.pid) and latest_checkpoint(run) is not None)
        worker = lock_holder(run)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _wait_for(lambda: not _alive(worker), seconds=20)  # no orphan keeps training
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(worker, signal.SIGKILL)
    # the re-run takes the run's lock, resumes it, and ends it (a smaller budget is a recorded change)
    assert main(["study", str(study), "--out", str(out), "--base.train.max_steps=5"]) == 0
    history = yaml.safe_load((run / "run_config.yaml").read_text())["history"]
    assert [h["event"] for h in history] == ["start", "resume"]
    assert history[1]["changed"]["train.max_steps"] == [100000, 5]


# ---------------------------------------------------------------------------
# resume: drift refused, cadence and budget recorded


def test_resume_refuses_drift_listing_the_keys_and_records_allowed_changes(corpus, tmp_path, capsys):
    from transfergen.config import RunConfig, build_config

    run = tmp_path / "run"
    assert main(pretrain(corpus, run, "--train.max_steps=10")) == 0
    saved = (run / "run_config.yaml").read_text()
    metrics = (run / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    drift = ["--train.lr=2e-3", "--train.batch_size=8", "--train.seq_len=16", "--train.seed=1", "--model.n_layer=3",
             "--corpus", str(corpus), str(corpus)]
    assert main(pretrain(corpus, run, "--train.max_steps=10", "--resume", *drift)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume would change what this run trains: " in err[0]
    for key in ("model.n_layer (2 -> 3)", "data.corpus", "train.batch_size (4 -> 8)", "train.seq_len (32 -> 16)",
                "train.lr (0.003 -> 0.002)", "train.seed (1337 -> 1)"):
        assert key in err[0], key
    assert (run / "run_config.yaml").read_text() == saved and (run / "metrics.jsonl").read_bytes() == metrics
    assert main(pretrain(corpus, run, "--train.max_steps=20", "--resume", "--train.eval_every=10",
                         "--train.log_every=2")) == 0
    record = yaml.safe_load((run / "run_config.yaml").read_text())
    history = record.pop("history")
    assert record == {k: v for k, v in yaml.safe_load(saved).items() if k != "history"}  # the start, untouched
    assert [h["event"] for h in history] == ["start", "resume"] and history[1]["step"] == 10
    assert history[1]["changed"] == {"train.max_steps": [10, 20], "train.log_every": [1, 2],
                                     "train.eval_every": [5, 10]}
    assert [r["step"] for r in read_metrics(run) if r.get("event") == "setup"] == [0]  # one setup record
    cfg = build_config(RunConfig, [str(run / "run_config.yaml")])  # still a config file, history aside
    assert cfg.train.max_steps == 10 and cfg.train.lr == 3e-3


def test_finetune_resume_refuses_another_strategy_or_task(tiny_pretrained, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"source": f"a {i}", "target": f"b {i}"}) + "\n" for i in range(30)))
    tasks = []
    for name, size in (("t1", 3), ("t2", 4)):
        tasks.append(tmp_path / f"{name}.yaml")
        tasks[-1].write_text(yaml.safe_dump({"reader": "jsonl", "path": str(pairs), "val_size": size,
                                             "test_size": 3, "max_source_tokens": 16, "max_target_tokens": 8}))
    run = tmp_path / "ft"

    def finetune(task: Path, *flags: str) -> int:
        return main(["finetune", "--init", str(tiny_pretrained), "--task", str(task), "--out", str(run),
                     "--train.max_steps=4", "--train.save_every=4", "--train.batch_size=4", "--train.threads=1",
                     *flags])

    assert finetune(tasks[0]) == 0
    capsys.readouterr()
    assert finetune(tasks[0], "--resume", "--strategy", "lora") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strategy.name ('full' -> 'lora')" in err[0], err  # not a load_state_dict traceback
    assert finetune(tasks[1], "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.name ('t1' -> 't2'), task.val_size (3 -> 4)" in err[0], err


# ---------------------------------------------------------------------------
# no remote code, ever


@pytest.fixture
def planted(tmp_path) -> Path:
    """A model folder whose config and tokenizer config map classes to its own Python file, which
    leaves a marker file when it is imported."""
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "planted", "architectures": ["PlantedModel"],
        "auto_map": {"AutoConfig": "planted.PlantedConfig", "AutoModelForCausalLM": "planted.PlantedModel"}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PlantedTokenizer", "auto_map": {"AutoTokenizer": ["planted.PlantedTokenizer", None]}}))
    (folder / "planted.py").write_text("from pathlib import Path\n"
                                       "Path(__file__).with_name('MARKER').write_text('ran')\n")
    return folder


def test_a_folder_asking_to_run_its_code_is_refused_in_one_line(planted, tmp_path, capsys, monkeypatch):
    task = tmp_path / "task.yaml"
    (tmp_path / "pairs.jsonl").write_text('{"source": "a", "target": "b"}\n' * 20)
    task.write_text(yaml.safe_dump({"reader": "jsonl", "path": str(tmp_path / "pairs.jsonl"), "val_size": 2,
                                    "test_size": 2}))
    ft = ["finetune", "--task", str(task), "--out", str(tmp_path / "ft")]
    commands = [["generate", "--model", str(planted), "--prompt", "x"],
                ["evaluate", "--model", str(planted), "--task", str(task), "--out", str(tmp_path / "ev")],
                [*ft, "--init", str(planted)], [*ft, "--init", "scratch", "--model.like", str(planted)],
                [*ft, "--init", "scratch", "--tokenizer.path", str(planted)],
                ["analyze", "domain", "--source", str(task), "--target", str(task), "--model", str(planted)]]
    for argv in commands:
        monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 5))  # a prompt, if any, would be answered yes
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and "asks to run its own Python code (auto_map: " in err, err
        assert "[y/N]" not in out + err and "trust_remote_code" not in out + err
    assert not (planted / "MARKER").exists()
    res = python("import sys; from transfergen.cli import main; sys.exit(main(sys.argv[1:]))", *commands[0],
                 input="y\n")
    assert res.returncode == 2 and errors(res.stderr) == res.stderr.strip().splitlines()
    assert "[y/N]" not in res.stdout + res.stderr and not (planted / "MARKER").exists()


def test_transformers_itself_is_told_never_to_trust_remote_code(planted, monkeypatch, capsys):
    """With our own refusal bypassed, every transformers load still refuses: trust_remote_code=False."""
    import transfergen.hub as hub
    import transfergen.tokenizer as tokenizer
    from transfergen.errors import UserError

    monkeypatch.setattr(hub, "refuse_custom_code", lambda folder: None)
    monkeypatch.setattr(tokenizer, "refuse_custom_code", lambda folder: None)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 5))
    for load in (hub.load_model, hub.build_like, tokenizer.TextTokenizer.load):
        # transformers 5 says "contains custom code", 4.x (make test-min) "requires you to execute"
        with pytest.raises(UserError, match=r"contains custom code|requires you to execute"):
            load(planted)
    out, err = capsys.readouterr()
    assert "[y/N]" not in out + err and not (planted / "MARKER").exists()
