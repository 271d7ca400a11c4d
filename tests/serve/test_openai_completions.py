"""/v1/completions through the official `openai` client against the real server: the reference
model's greedy output on the same prompt (text or token ids), whole and streamed, with usage
equal to the token counts; stop strings; seeded sampling repeats; /v1/models."""

import pytest

from tests.serve.openai_client import TOKENIZER, client

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
N = 24


def test_models_lists_the_served_model(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == ["step3"]
    assert client(server).models.retrieve("step3").id == "step3"


def test_a_greedy_completion_is_the_reference_output(server, reference):
    ids, text = reference([PROMPT], N)[0]
    out = client(server).completions.create(model="step3", prompt=PROMPT, max_tokens=N,
                                            temperature=0)
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert out.choices[0].text == text
    assert out.choices[0].finish_reason == ("stop" if len(ids) < N else "length")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == \
        (len(TOKENIZER.encode(PROMPT)), len(ids), len(TOKENIZER.encode(PROMPT)) + len(ids))


def test_a_token_id_prompt_is_used_as_given(server, reference):
    ids, text = reference([PROMPT], N)[0]
    out = client(server).completions.create(model="step3", prompt=TOKENIZER.encode(PROMPT),
                                            max_tokens=N, temperature=0)
    assert out.choices[0].text == text and out.usage.completion_tokens == len(ids)


def test_a_streamed_completion_is_the_reference_output_with_usage(server, reference):
    ids, text = reference([PROMPT], N)[0]
    chunks = list(client(server).completions.create(
        model="step3", prompt=PROMPT, max_tokens=N, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) > 2  # token by token, not one piece
    assert "".join(texts) == text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == ("stop" if len(ids) < N else "length") and not any(reasons[:-1])
    assert all(c.usage is None for c in chunks[:-1]) and not chunks[-1].choices
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == \
        (len(TOKENIZER.encode(PROMPT)), len(ids))


@pytest.mark.parametrize("stream", [False, True])
def test_stop_ends_the_text_before_the_stop_string(server, reference, stream):
    _, text = reference([PROMPT], N)[0]
    stop = text.split()[2]  # a word the greedy output reaches
    out = client(server).completions.create(model="step3", prompt=PROMPT, max_tokens=N,
                                            temperature=0, stop=[stop], stream=stream)
    chunks = list(out) if stream else [out]
    assert "".join(c.choices[0].text for c in chunks) == text[:text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(server):
    def sample(seed):
        return client(server).completions.create(model="step3", prompt=PROMPT, max_tokens=12,
                                                 temperature=1.0, top_p=0.9, seed=seed)

    first = sample(7)
    assert first.usage.completion_tokens >= 1
    assert sample(7).choices[0].text == first.choices[0].text
