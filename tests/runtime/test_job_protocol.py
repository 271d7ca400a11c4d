"""The job's client protocol under a real mpiexec job: malformed or unknown messages sent
straight to the coordinator's endpoint are answered with errors and change nothing, a request
the ranks cannot take fails alone, and the next good request still gets the in-process tokens;
and the request options (bad words, min tokens, stop strings) give the same output through
`generate --engines` and `run`."""

import json
import subprocess
import sys
import time

import pytest

from step3_trt.cli.generate_cmd import word_ids
from step3_trt.runtime.afd.serving_job import ServingJob, ipc_endpoint
from step3_trt.runtime.local import LocalRunner
from step3_trt.sampling import SamplingParams
from step3_trt.serve.job_client import JobClient
from step3_trt.serve.request import GenerationRequest
from step3_trt.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(engines_2a2f, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("job")
    job = ServingJob(engines_2a2f[1], run_dir, ipc_endpoint(run_dir), timeout=20.0)
    job.start()
    deadline = time.monotonic() + 600
    while not job.listening():
        assert job.exit_code() is None, job.log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield job
    job.stop()


def exchange(endpoint: str, payloads: list[bytes], replies: int) -> list[dict]:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    for p in payloads:
        sock.send(p)
    got = []
    while len(got) < replies and sock.poll(30_000):
        got.append(json.loads(sock.recv()))
    sock.close(linger=0)
    ctx.term()
    return got


class Collect:
    def __init__(self):
        self.result = None

    def on_tokens(self, tokens):
        pass

    def on_finished(self, result):
        self.result = result

    def is_cancelled(self):
        return False


def test_bad_client_messages_fail_alone_and_the_job_serves_on(job, engines_2a2f):
    params = {"max_new_tokens": 4, "greedy": True}
    replies = exchange(job.endpoint, [
        b"not json",
        json.dumps({"type": "make_coffee"}).encode(),
        json.dumps({"type": "request", "id": 1, "prompt_ids": "1,2,3", "params": params}).encode(),
        json.dumps({"type": "request", "id": 2, "prompt_ids": [1, 2], "params": {
            "max_new_tokens": 4, "temperature": -1}}).encode(),
        json.dumps({"type": "request", "id": 3, "prompt_ids": [10**6], "params": params}).encode(),
        json.dumps({"type": "cancel", "id": "x"}).encode(),
    ], replies=6)
    errors = {r.get("error") for r in replies if r["type"] == "error"}
    assert any("not a JSON message" in e for e in errors)
    assert "unknown message type 'make_coffee'" in errors
    assert any("cancel.id must be an integer" in e for e in errors)
    results = {r["finished"][0]["id"]: r["finished"][0]["error"]
               for r in replies if r["type"] == "update"}
    assert "request.prompt_ids must be a list, got str" in results[1]
    assert "temperature must be a finite number >= 0" in results[2]
    assert "prompt token ids must be in [0," in results[3]  # refused by the attention rank

    client = JobClient(job.endpoint, 30.0, 60.0)
    try:
        done = Collect()
        prompt = [5, 9, 33, 2]
        params = SamplingParams(max_new_tokens=8, greedy=True)
        client.submit(GenerationRequest(prompt, params, False, []), done)
        deadline = time.monotonic() + 120
        while done.result is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
    assert done.result["output_ids"] == LocalRunner(engines_2a2f[1]).generate([prompt], params)[0]
    assert job.exit_code() is None


def contains(ids: list[int], seq: list[int]) -> bool:
    return any(ids[i:i + len(seq)] == seq for i in range(len(ids)))


def cli(*args):
    cmd = [sys.executable, "-m", "step3_trt.cli.main", *map(str, args), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    return [x for x in lines if "summary" not in x]  # `run` ends with its summary line


def test_bad_words_min_tokens_and_stop_strings_agree_across_paths(bundled_2a2f):
    engines = bundled_2a2f
    prompts = ["Return a new list containing", "The"]
    base = ["--engines", engines, "--greedy", "--max-new-tokens", "12",
            *[a for p in prompts for a in ("--prompt", p)]]
    plain = cli("generate", *base)
    banned = " " + plain[0]["text"].split()[1]  # a word the model says unbanned
    stop = plain[1]["text"].split()[2]
    words = word_ids(load_tokenizer(engines), [banned])[0]
    assert contains(plain[0]["output_ids"], words)
    options = ["--bad-word", banned, "--stop", stop, "--min-tokens", "3"]
    local = cli("generate", *base, *options)
    afd = cli("run", *base, *options)
    assert [x["output_ids"] for x in local] == [x["output_ids"] for x in afd]
    assert [x["text"] for x in local] == [x["text"] for x in afd]
    assert not contains(local[0]["output_ids"], words)
    assert stop not in local[1]["text"] and len(local[1]["text"]) < len(plain[1]["text"])
