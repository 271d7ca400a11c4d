"""The `step3-trt` console script, run as a user runs it (a subprocess)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [str(Path(sys.executable).with_name("step3-trt"))] if shutil.which(
    "step3-trt", path=str(Path(sys.executable).parent)) else [sys.executable, "-m", "step3_trt.cli.main"]


def cli(*args, check=True):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_make_inspect_generate_round_trip(tmp_path):
    out = tmp_path / "ckpt"
    assert "wrote tiny checkpoint" in cli("make-checkpoint", "--preset", "tiny", "--out", out,
                                          "--seed", "3", "--dtype", "bfloat16").stdout
    report = json.loads(cli("inspect", out, "--json").stdout)
    assert report["config"]["torch_dtype"] == "bfloat16" and "BF16" in report["weight_bytes"]
    proc = cli("generate", "--checkpoint", out, "--prompt", "Hello", "--prompt", "A longer prompt",
               "--max-new-tokens", "6", "--greedy", "--json")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert set(line) == {"prompt_ids", "output_ids", "text"}
        assert 1 <= len(line["output_ids"]) <= 6
    assert lines[0]["prompt_ids"][1:] == list(b"Hello")  # BOS + bytes of the byte tokenizer
    again = cli("generate", "--checkpoint", out, "--prompt-ids",
                ",".join(map(str, lines[1]["prompt_ids"])), "--max-new-tokens", "6", "--greedy",
                "--json")
    assert json.loads(again.stdout)["output_ids"] == lines[1]["output_ids"]


def test_sampled_generation_is_reproducible_with_a_seed(tiny_checkpoint):
    args = ("generate", "--checkpoint", tiny_checkpoint, "--prompt-ids", "256,5,6",
            "--max-new-tokens", "8", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.9",
            "--seed", "11", "--json")
    assert cli(*args).stdout == cli(*args).stdout


def test_inspect_released_preset_text():
    out = cli("inspect", "--preset", "step3").stdout
    assert "316.29B" in out and "37.92B" in out and "62,464 B (BF16)" in out


@pytest.mark.parametrize("args, message", [
    (("inspect", "/nonexistent/dir"), "no config.json"),
    (("generate", "--checkpoint", "/nonexistent", "--prompt", "x"), "does not exist"),
    (("generate", "--prompt-ids", "1,a"), "comma-separated integers"),
    (("make-checkpoint", "--out", "{tiny}"), "already exists"),
])
def test_errors_are_one_line_without_traceback(args, message, tiny_checkpoint):
    args = [str(a).format(tiny=tiny_checkpoint) for a in args]
    proc = cli(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_bad_generation_flags(tiny_checkpoint):
    proc = cli("generate", "--checkpoint", tiny_checkpoint, "--prompt-ids", "1", "--top-p", "2",
               check=False)
    assert proc.returncode == 2 and "top_p must be in (0, 1]" in proc.stderr
