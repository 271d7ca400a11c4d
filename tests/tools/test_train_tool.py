"""The training tool: schedule, data order, determinism, and a 3-step end-to-end run."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.config import Step3Config
from step3_trt.model.load import load_reference_model
from step3_trt.model.reference import Step3ForCausalLM
from step3_trt.presets import TINY_TEXT
from step3_trt.tokenizer import Step3Tokenizer
from step3_trt.tools.bpe import IMAGE_TOKEN, train_bpe
from step3_trt.tools.train import STDLIB_TINY, main
from step3_trt.tools.trainer import TrainSettings, batches, init_weights, lr_factor, train

# A miniature of STDLIB_TINY for a run that takes seconds.
SMALL = {"hidden_size": 64, "num_hidden_layers": 4, "vocab_size": 512, "image_token_id": 511,
         "num_attention_heads": 2, "head_dim": 16, "share_q_dim": 32, "intermediate_size": 96,
         "moe_num_experts": 4, "moe_intermediate_size": 32, "share_expert_dim": 48,
         "moe_layers_enum": "1,2"}


def test_stdlib_tiny_config_is_valid_and_small():
    cfg = Step3Config.from_dict(STDLIB_TINY)
    assert cfg.dense_layers and cfg.moe_layers and cfg.num_hidden_layers >= 4
    assert cfg.share_expert_dim != cfg.moe_intermediate_size
    assert cfg.image_token_id == cfg.vocab_size - 1


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    s = TrainSettings(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [lr_factor(i, s) for i in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(100, s) == pytest.approx(0.1)


def test_batches_are_deterministic_windows_of_the_stream():
    ids = torch.arange(1000)
    a = batches(ids, 16, 4, torch.Generator().manual_seed(3))
    b = batches(ids, 16, 4, torch.Generator().manual_seed(3))
    for _ in range(20):  # more than one pass over the stream
        x, y = next(a), next(b)
        assert torch.equal(x, y) and x.shape == (4, 16)
        assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))


def test_training_is_deterministic_and_learns():
    cfg = Step3Config.from_dict(TINY_TEXT)
    ids = torch.arange(4000) % 37  # a periodic stream: easy to learn
    runs = []
    for _ in range(2):
        model = Step3ForCausalLM(cfg)
        init_weights(model, 0.02, torch.Generator().manual_seed(0))
        s = TrainSettings(steps=12, batch_size=4, seq_len=32, lr=1e-2, warmup_steps=2)
        runs.append((train(model, ids, cfg.bos_token_id, s), model))
    (r1, m1), (r2, m2) = runs
    assert r1.losses == r2.losses
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert r1.losses[-1] < r1.losses[0] - 0.5
    assert len(r1.expert_load) == len(cfg.moe_layers)
    assert all(sum(load) == pytest.approx(1.0, abs=1e-3) for load in r1.expert_load)
    # The routers' monitoring hooks are removed after training.
    assert not any(m._forward_hooks for m in m1.modules())


def test_bpe_has_the_step3_special_tokens():
    text = ["Return the value of the attribute named by the string.", "Close the file."] * 50
    tok = train_bpe(text, 300)
    assert tok.tokenizer.get_vocab_size() == 300
    assert (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    assert tok.tokenizer.token_to_id(IMAGE_TOKEN) == 299
    s = "Any text, even ünïcode ✓ and bytes."
    assert tok.decode(tok.encode(s)) == s


def test_three_step_run_writes_a_loadable_checkpoint(tmp_path):
    out, data = tmp_path / "ckpt", tmp_path / "data"
    argv = ["--out", str(out), "--data-dir", str(data), "--steps", "3", "--batch-size", "2",
            "--seq-len", "32", "--eval-every", "2", "--eval-windows", "4", "--threads", "1",
            "--config", json.dumps(SMALL)]
    assert main(argv) == 0
    reader = CheckpointReader(out).validate()
    assert reader.vision_names  # the vision stand-in mirrors the released layout
    assert reader.raw_config["text_config"]["hidden_size"] == 64
    model = load_reference_model(reader, dtype="float32")
    tok = Step3Tokenizer.from_dir(out)
    assert tok.tokenizer.get_vocab_size() == reader.config.vocab_size
    assert model(torch.tensor([tok.encode("Return the")])).isfinite().all()
    record = json.loads((out / "TRAINING.json").read_text())
    assert record["steps_done"] == 3 and record["seed"] == 0
    assert 0 < record["final_train_loss"] < math.log(SMALL["vocab_size"]) + 1
    assert record["heldout"]["perplexity"] < 2 * SMALL["vocab_size"]
    assert record["heldout"]["tokens"] == 4 * 32
    assert record["command"] == "python -m step3_trt.tools.train " + shlex.join(argv)
    assert (data / "heldout.txt").stat().st_size > 0 and (data / "calib.txt").stat().st_size > 0
    assert main(argv) == 2  # refuses to overwrite without --overwrite
    assert not torch.are_deterministic_algorithms_enabled()  # process settings restored
