import os
from pathlib import Path
from typing import NamedTuple

import pytest

# Nothing in the tests may reach the Hugging Face hub (models and tokenizers come from configs and
# local folders): offline, a stray hub name fails at once instead of hanging on a fresh machine.
# Set here, the CLI subprocesses the tests start inherit it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Ray on loopback only: a local Ray started with this variable at 0 binds every port to 127.0.0.1 (with
# Ray 2.60 on Linux it otherwise listens on all interfaces, and rewrites --node-ip-address 127.0.0.1 to the
# machine's network address). Joining a multi-node cluster needs it unset (docs/cluster.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Planted in the environment of the shared search: none may reach MLflow.
SECRETS = {"KDX_TEST_API_TOKEN": "tok-5ecret-9f8e7d", "AWS_SECRET_ACCESS_KEY": "aws-5ecret-1a2b3c", "MY_DB_PASSWORD": "pw-5ecret-4d5e"}


@pytest.fixture(autouse=True, scope="session")
def _kdx_cache(tmp_path_factory):
    """Every test session gets its own cache folder, never the user's."""
    os.environ["KDX_CACHE"] = str(tmp_path_factory.mktemp("kdx-cache"))
    yield


class Searched(NamedTuple):
    folder: Path  # the working directory: mlflow.db, mlruns/, kdx-results/, end-report/
    process: object  # the finished `kdx search` (stdout, stderr, returncode)
    runs: list  # every MLflow run of the experiment, read once when the search ended


@pytest.fixture(scope="session")
def tiny_search(tmp_path_factory) -> Searched:
    """One small real search (Ray, SQLite MLflow) that the schema, report, export, gain and
    seed tests all read: experiment 'tiny', 4 trials, a base-recipe twin per architecture,
    the front's single-run points confirmed on a second seed, then the equal-budget gain on 2 front architectures (2 recipes per arm, raced on 2 seeds); the
    end-of-search report in end-report/."""
    from search_helpers import kdx, runs, write_config

    folder = tmp_path_factory.mktemp("tiny")
    cfg = write_config(folder, seeds=2, twins="tuned", gain_archs=2, confirm=2)  # the smallest and the largest front architecture
    p = kdx("search", str(cfg), "--report-dir", "end-report", cwd=folder, extra_env=SECRETS)
    assert p.returncode == 0, p.stdout + p.stderr
    return Searched(folder, p, runs(folder / "mlflow.db", "tiny"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run far faster on one thread than on a contended pool."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
