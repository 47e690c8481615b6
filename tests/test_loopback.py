"""No test opens a port beyond the machine: the local Ray kdx starts listens on loopback only (conftest.py)."""

import subprocess
import sys

from search_helpers import env_for

PROBE = """
import ipaddress, json, os, psutil
from workflows.tune import init_ray
import ray
init_ray(None)
me = psutil.Process()
pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
listening = [c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
ray.shutdown()
print(json.dumps(listening))
"""


def test_the_local_ray_listens_on_loopback_only(tmp_path):
    import ipaddress
    import json

    env = env_for(tmp_path)
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    listening = json.loads(p.stdout.strip().splitlines()[-1])
    assert listening, "Ray opened no listening socket: the probe did not see its processes"
    mapped = [ip.removeprefix("::ffff:") for ip in listening]
    assert all(ipaddress.ip_address(ip).is_loopback for ip in mapped), listening
