import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _kdx_cache(tmp_path_factory):
    """Every test session gets its own cache folder, never the user's."""
    os.environ["KDX_CACHE"] = str(tmp_path_factory.mktemp("kdx-cache"))
    yield
