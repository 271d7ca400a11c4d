"""A single-host AFD job's own network namespace (runtime/afd/netns.py): only a loopback
interface, up; TCP binds there and is invisible from the host's namespace."""

import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = """
import os, socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(os.readlink("/proc/self/ns/net"))
print(",".join(sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])))
print(s.getsockname()[1])
"""


def test_the_job_namespace_has_loopback_only_and_hides_its_listeners():
    proc = subprocess.run([sys.executable, "-m", "step3_trt.runtime.afd.netns", sys.executable,
                           "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    space, interfaces, port = proc.stdout.split()
    assert space != os.readlink("/proc/self/ns/net")
    assert interfaces == "lo"
    ours = open("/proc/net/tcp").read()
    assert f":{int(port):04X} " not in ours  # the probe's listener is not in our table


def test_no_command_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "step3_trt.runtime.afd.netns"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "usage:" in proc.stderr
