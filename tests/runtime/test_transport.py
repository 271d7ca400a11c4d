"""The data planes (mpi and torch over gloo under the real mpiexec; inproc in threads) and the
typed control messages: tensors of every dtype and empty ones arrive bit-identical in order,
a message for another (layer, micro-batch) than expected and a silent peer each fail naming the
peer, and malformed or unknown messages are refused."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from step3_trt.runtime import messages
from step3_trt.runtime.afd.launch import mpiexec_path
from step3_trt.runtime.afd.stalls import StallWatch
from step3_trt.runtime.messages import MessageError, Stalled, Submit, Vote
from step3_trt.runtime.ranks import JobLayout, RankId, Role
from step3_trt.runtime.transport.base import AfdError, Slot
from step3_trt.runtime.transport.inproc import InprocHub
from step3_trt.sampling import SamplingParams
from tests.conftest import REPO

PROBE = Path(__file__).with_name("transport_probe.py")
A0, F0 = RankId(Role.ATTENTION, 0), RankId(Role.FFN, 0)


def probe(transport: str, mode: str) -> dict[str, dict]:
    cmd = [mpiexec_path(), "-n", "3", "--allow-run-as-root", "--oversubscribe", sys.executable,
           str(PROBE), transport, mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return {x["rank"]: x for x in lines}


@pytest.mark.parametrize("transport", ["mpi", "torch"])
def test_data_messages_arrive_bit_identical_and_in_order(transport):
    got = probe(transport, "exchange")
    ffn, attention = got["FFN rank 0"], got["attention rank 0"]
    assert ffn["same"] == [True, True, True]
    assert ffn["shapes"][1] == [[0, 4], [0, 3], [0, 5]]  # an empty micro-batch
    assert [len(r) for r in attention["replies"]] == [3, 0, 7]
    assert attention["replies"][2][0] == [2.0, 2.0]
    assert ffn["vote"] == [True, False, "attention rank 0"]


@pytest.mark.parametrize("transport", ["mpi", "torch"])
def test_a_message_for_another_layer_is_refused_naming_the_sender(transport):
    err = probe(transport, "mismatch")["FFN rank 0"]["error"]
    assert "attention rank 0 (MPI rank 1) sent data for layer 2 micro-batch 1, expected " \
           "layer 0 micro-batch 1" in err


@pytest.mark.parametrize("transport", ["mpi", "torch"])
def test_a_silent_peer_fails_the_wait_naming_it(transport):
    err = probe(transport, "silence")["FFN rank 0"]["error"]
    assert err == "FFN rank 0 (MPI rank 2): no input from attention rank 0 (MPI rank 1) within 1 s"


def test_inproc_data_plane_between_threads():
    hub = InprocHub(JobLayout(1, 1), timeout_s=5.0)
    a, f = hub.data_plane(A0, torch.device("cpu")), hub.data_plane(F0, torch.device("cpu"))
    x = torch.randn(3, 4).to(torch.bfloat16)
    result = {}

    def ffn():
        (y,) = f.wait(f.post_recv(A0, 1, 0, [Slot(torch.bfloat16, (4,))]), "input", A0)
        f.send(A0, 1, 0, [y.float() * 2])

    t = threading.Thread(target=ffn)
    t.start()
    a.send(F0, 1, 0, [x])
    x.zero_()  # the message was copied: the receiver sees what was sent
    result["reply"] = a.wait(a.post_recv(F0, 1, 0, [Slot(torch.float32, (4,))]), "reply", F0)
    t.join()
    assert result["reply"][0].shape == (3, 4) and result["reply"][0].abs().sum() > 0
    with pytest.raises(AfdError, match="a data message has tensors"):
        a.send(F0, 2, 0, [torch.zeros(2, 3)])
        f.wait(f.post_recv(A0, 2, 0, [Slot(torch.float32, (4,))]), "input", A0)


def test_a_stalled_wait_is_reported_before_the_rank_gives_up():
    hub = InprocHub(JobLayout(1, 1), timeout_s=0.2)
    f = hub.data_plane(F0, torch.device("cpu"))
    f.STALL_FACTOR = 1.0
    stalls = []
    f.on_stall = lambda peer, what, s: stalls.append((peer, what, s))
    with pytest.raises(AfdError, match=r"no input from attention rank 0 \(MPI rank 1\) within 0.4 s"):
        f.wait(f.post_recv(A0, 0, 0, [Slot(torch.float32, (4,))]), "input", A0)
    assert stalls == [(A0, "input", 0.2)]


def test_the_stall_watch_names_the_rank_everyone_waits_on(monkeypatch):
    layout = JobLayout(2, 2)
    watch = StallWatch(layout, timeout_s=0.0)
    clock = [100.0]
    monkeypatch.setattr("step3_trt.runtime.afd.stalls.time.monotonic", lambda: clock[0])
    a0, a1, f0 = (RankId(Role.ATTENTION, 0), RankId(Role.ATTENTION, 1), RankId(Role.FFN, 0))
    f1 = RankId(Role.FFN, 1)
    watch.report(a0, Stalled(layout.world(f1), "FFN partial", 5.0))
    watch.report(f0, Stalled(layout.world(a0), "FFN input", 5.0))  # f0 only waits on a0
    watch.check()  # within the grace period: nothing yet
    clock[0] += 2.0
    with pytest.raises(AfdError, match=r"FFN rank 1 \(MPI rank 4\) stopped answering: attention "
                                       r"rank 0 \(MPI rank 1\) got no FFN partial from it"):
        watch.check()
    watch.progress(a0)  # a step report: a0's wait ended, and f1 was not hung after all
    watch.report(a1, Stalled(layout.world(a0), "step vote", 5.0))
    clock[0] += 2.0
    with pytest.raises(AfdError, match="attention rank 0"):
        watch.check()


def test_messages_round_trip_and_bad_ones_are_refused():
    submit = Submit(7, [1, 2, 3], SamplingParams(max_new_tokens=5, top_k=3, seed=2**63),
                    stream=True, bad_words=[[4, 5]], min_tokens=2)
    assert messages.decode(messages.encode(submit)) == submit
    assert messages.decode(messages.encode(Vote(True, False))) == Vote(True, False)
    good = json.loads(messages.encode(submit))
    cases = [
        ({**good, "type": "make_coffee"}, "unknown message type 'make_coffee'"),
        ({**good, "prompt_ids": "1,2,3"}, "request.prompt_ids must be a list, got str"),
        ({**good, "prompt_ids": [1, 2.5]}, r"request.prompt_ids\[1\] must be an integer"),
        ({**good, "id": True}, "request.id must be an integer, got bool"),
        ({**good, "id": 2**70}, "request.id is out of range"),
        ({**good, "extra": 1}, "request: unknown field"),
        ({k: v for k, v in good.items() if k != "params"}, "request: missing field 'params'"),
        ({**good, "params": {**good["params"], "max_new_tokens": 0}},
         "max_new_tokens must be a positive integer"),
        ({**good, "bad_words": [[1], "x"]}, r"request.bad_words\[1\] must be a list"),
        ([1, 2], "a message is a JSON object"),
    ]
    for raw, error in cases:
        with pytest.raises(MessageError, match=error):
            messages.decode(json.dumps(raw))
    with pytest.raises(MessageError, match="not a JSON message"):
        messages.decode(b"\xff{")
    with pytest.raises(MessageError, match="unexpected message type 'vote' here"):
        messages.decode(messages.encode(Vote(True, True)), expect=(Submit,))
