"""Where generation stops (`GenerationConfig.eos_token_ids`, the union of config.json,
generation_config.json, the tokenizer's EOS and `<|EOT|>`), the file's sampling fields, the
files carried through convert and build, and generation stopping there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.convert.convert import convert
from step3_trt.generation_config import GenerationConfig, GenerationConfigError
from step3_trt.runtime.engine import RankEngine
from step3_trt.tokenizer import load_tokenizer
from tests.conftest import REPO

transformers = pytest.importorskip("transformers")

BUNDLED = REPO / "models" / "step3-tiny"
EOT_ID = 128  # the bundled tokenizer's <|EOT|> (tests/test_tokenizer.py)


def copy_of_bundled(tmp_path, weights=False):
    out = tmp_path / "ckpt"
    shutil.copytree(BUNDLED, out, ignore=None if weights else
                    shutil.ignore_patterns("*.safetensors*"))
    return out


def write(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")


def test_bundled_model_stops_on_eos_and_end_of_turn():
    cfg = Step3Config.from_file(BUNDLED)
    gen = GenerationConfig.from_dir(BUNDLED, cfg)
    assert gen.eos_token_ids == (1, EOT_ID)
    assert set(gen.eos_token_ids) == set(
        transformers.GenerationConfig.from_pretrained(str(BUNDLED)).eos_token_id)
    assert (gen.bos_token_id, gen.pad_token_id, gen.temperature) == (0, 2, None)


def test_a_release_like_checkpoint(tmp_path):
    """eos_token_id a list in the text config, more ids and sampling defaults in
    generation_config.json: the union, and the fields as transformers reads them."""
    d = copy_of_bundled(tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["text_config"]["eos_token_id"] = [1, 7]
    write(d / "config.json", config)
    file = {"bos_token_id": 0, "eos_token_id": [7, 9], "do_sample": True, "temperature": 0.6,
            "top_p": 0.95, "top_k": 0, "max_new_tokens": 512, "transformers_version": "4.54.0"}
    write(d / "generation_config.json", file)
    gen = GenerationConfig.from_dir(d, Step3Config.from_file(d))
    assert gen.eos_token_ids == (1, 7, 9, EOT_ID)
    hf = transformers.GenerationConfig.from_pretrained(str(d))
    assert set(hf.eos_token_id) <= set(gen.eos_token_ids)
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.max_new_tokens) == \
        (hf.do_sample, hf.temperature, hf.top_p, hf.top_k, hf.max_new_tokens)
    assert gen.extra == {"transformers_version": "4.54.0"}
    # No generation_config.json: the config's ids, the tokenizer's EOS and <|EOT|>.
    (d / "generation_config.json").unlink()
    assert GenerationConfig.from_dir(d, Step3Config.from_file(d)).eos_token_ids == (1, 7, EOT_ID)


def test_a_config_without_eos_still_stops(tmp_path):
    """The issue's case: config.json without eos_token_id used to never stop on EOS."""
    d = copy_of_bundled(tmp_path)
    config = json.loads((d / "config.json").read_text())
    del config["text_config"]["eos_token_id"]
    write(d / "config.json", config)
    (d / "generation_config.json").unlink()
    cfg = Step3Config.from_file(d)
    assert cfg.eos_token_ids == ()
    assert GenerationConfig.from_dir(d, cfg).eos_token_ids == (1, EOT_ID)


@pytest.mark.parametrize("content, match", [
    ("{oops", "not valid JSON"), ("[1]", "JSON object"),
    ('{"eos_token_id": "1"}', "`eos_token_id`"), ('{"eos_token_id": [1, 5000]}', "vocab_size"),
    ('{"temperature": -1}', "`temperature`"), ('{"top_p": 0}', "`top_p`"),
    ('{"top_k": 1.5}', "`top_k`"), ('{"do_sample": "yes"}', "`do_sample`"),
    ('{"max_new_tokens": 0}', "`max_new_tokens`"),
])
def test_bad_generation_config_names_file_and_field(tmp_path, content, match):
    d = copy_of_bundled(tmp_path)
    (d / "generation_config.json").write_text(content)
    with pytest.raises(GenerationConfigError, match=match) as e:
        GenerationConfig.from_dir(d, Step3Config.from_file(d))
    assert "generation_config.json" in str(e.value)


def test_files_are_carried_into_role_checkpoints_and_engines(engines_1a1f, tmp_path):
    roles = convert(BUNDLED, BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu.yaml"),
                    tmp_path / "roles", progress=False)
    for name in ("generation_config.json", "tokenizer_config.json", "tokenizer.json"):
        assert (roles / "tokenizer" / name).read_bytes() == (BUNDLED / name).read_bytes()
    arch = json.loads((roles / "attention" / "rank0" / "config.json").read_text())["architecture"]
    gen = GenerationConfig.from_dir(roles, Step3Config.from_dict(arch))
    assert gen == GenerationConfig.from_dir(BUNDLED, Step3Config.from_file(BUNDLED))
    # Engines carry the role checkpoints' tokenizer directory: the chat template arrives.
    _, engines = engines_1a1f
    cfg = Step3Config.from_dict(RankEngine(engines / "attention" / "rank0").arch)
    assert load_tokenizer(engines).chat_templates
    assert GenerationConfig.from_dir(engines, cfg).eos_token_ids[-1] == \
        load_tokenizer(engines).token_id("<|EOT|>")


def generate_cli(checkpoint, *args):
    proc = subprocess.run([sys.executable, "-m", "step3_trt.cli.main", "generate", "--checkpoint",
                           str(checkpoint), "--greedy", "--json", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["output_ids"]


def test_generate_stops_on_an_id_listed_only_in_generation_config(tmp_path):
    d = copy_of_bundled(tmp_path, weights=True)
    prompt = ("--prompt", "Return a new list containing", "--max-new-tokens", "24")
    free = generate_cli(d, *prompt)
    k = next(i for i, t in enumerate(free) if t not in free[:i] and i >= 3)
    write(d / "generation_config.json", {"eos_token_id": [1, free[k]]})
    assert generate_cli(d, *prompt) == free[:k + 1]
