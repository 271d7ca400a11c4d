"""LocalRunner.prompt_logits: logits at every prompt position, through the paged engines."""

import pytest
import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.model.load import load_reference_model
from step3_trt.runtime.local import LocalRunner


@pytest.fixture(scope="module")
def runner(engines_1a1f):
    return LocalRunner(engines_1a1f[1])


def test_every_position_matches_the_reference(runner, odd_checkpoint):
    model = load_reference_model(CheckpointReader(odd_checkpoint))
    g = torch.Generator().manual_seed(5)
    # 1 + 17 + 300 + 40 tokens under a 256-token step budget: several sequences share a step and
    # the 300-token prompt is prefilled in two chunks (the second on top of its cached K/V)
    lengths = (1, 17, 300, 40)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()
               for n in lengths]
    got = runner.prompt_logits(prompts)
    assert [tuple(t.shape) for t in got] == [(n, model.config.vocab_size) for n in lengths]
    with torch.no_grad():
        want = [model(torch.tensor([p]))[0] for p in prompts]
    for g_, w in zip(got, want):
        # float32 end to end; the compiled graphs and the plugin ops only reorder sums
        torch.testing.assert_close(g_, w, rtol=1e-4, atol=1e-4)


def test_bad_prompts_are_refused(runner):
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 263\)"):
        runner.prompt_logits([[1, 263]])
    with pytest.raises(ValueError, match="maximum sequence length 1024"):
        runner.prompt_logits([[1] * 1024])
