"""The OpenAI server is supervised like tritonserver: killed, it is restarted from the same
--max-restarts budget and serves the reference answer again. While the AFD job restarts after a
rank dies it answers 503 in OpenAI's error shape (and /health 503), a stream in flight ends
with an error event, and once the job is back it reconnects by itself and serves again."""

import os
import signal
import threading

import pytest

from tests.serve.openai_client import client
from tests.serve.server import Server, alive, wait_for

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"




def greedy(server, n: int = 16) -> str:
    out = client(server).completions.create(model="step3", prompt=PROMPT, max_tokens=n,
                                            temperature=0)
    return out.choices[0].text


def test_the_openai_server_restarts_and_rides_out_a_job_restart(bundled_engines, reference,
                                                                 tmp_path):
    import openai

    _, text = reference([PROMPT], 16)[0]
    server = Server(bundled_engines, tmp_path / "run", ["--max-restarts", "2"],
                    openai=True).start()
    try:
        wait_for(lambda: f"ready: OpenAI API at {server.openai_url}/v1" in server.output(),
                 "serve did not print the OpenAI endpoint")  # it polls apart from the test
        # killed: restarted (1 of 2), ready again, same answers
        before = server.openai_pid()
        os.kill(before, signal.SIGKILL)
        wait_for(lambda: not alive(before), "the OpenAI server did not die")
        wait_for(lambda: "restarting the OpenAI server (1 of 2)" in server.output(),
                 "serve did not restart the OpenAI server")
        wait_for(lambda: "ready again: the OpenAI server restarted" in server.output(),
                 "the restarted OpenAI server did not answer")
        assert server.openai_pid() != before
        assert greedy(server) == text
        # a rank dies with a stream in flight: the stream ends with an error event, and
        # requests while the job restarts get 503
        stream = client(server).completions.create(model="step3", prompt=PROMPT,
                                                   max_tokens=900, temperature=0, stream=True)
        errors: list[Exception] = []
        first = threading.Event()

        def read():
            try:
                for _ in stream:
                    first.set()
            except openai.APIError as e:
                errors.append(e)
            first.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert first.wait(300)
        os.kill(server.rank_pids()[4], signal.SIGKILL)  # FFN rank 1
        reader.join(300)
        assert len(errors) == 1 and "the AFD job stopped" in str(errors[0]), errors
        wait_for(lambda: not server.openai_ready(), "/health stayed 200")
        with pytest.raises(openai.InternalServerError) as down:
            greedy(server)
        assert down.value.status_code == 503 and down.value.code == "job_unavailable"
        assert "the AFD job is restarting after a failure" in down.value.message
        wait_for(lambda: "restarting the AFD job (2 of 2)" in server.output(),
                 "serve did not restart the job")
        server.wait_ready()  # tritonserver and the OpenAI server both serve again
        assert greedy(server) == text
    finally:
        assert server.stop() == 0
