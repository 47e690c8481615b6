"""The README's "bring your own data, teacher and student" example runs as written."""

import re
import subprocess
import sys

import pytest

from search_helpers import ROOT, env_for, kdx_args

pytestmark = pytest.mark.slow


def _block(text: str, first_line: str) -> str:
    found = re.search(r"```(?:python|yaml)\n(" + re.escape(first_line) + r".*?)```", text, re.S)
    assert found, f"README has no code block starting {first_line!r}"
    return found.group(1)


def test_the_bring_your_own_example_runs_as_written(tmp_path):
    readme = (ROOT / "README.md").read_text()
    lab = tmp_path / "mylab"
    lab.mkdir()
    (lab / "__init__.py").write_text("")
    (lab / "parts.py").write_text(_block(readme, "# mylab/parts.py"))
    (lab / "search.yaml").write_text(_block(readme, "# mylab/search.yaml") + "train: {epochs: 2}\n")
    env = {**env_for(tmp_path), "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    save = "import torch; from mylab.parts import teacher; torch.save(teacher((16,), 4).state_dict(), 'mylab/teacher.pt')"
    subprocess.run([sys.executable, "-c", save], cwd=tmp_path, env=env, check=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"  # relative paths are read from the config's folder, not the working directory
    elsewhere.mkdir()
    p = subprocess.run(kdx_args("validate", str(lab / "search.yaml")), capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "teacher mylab.parts:teacher" in p.stdout and "base student mylab.parts:student" in p.stdout
    p = subprocess.run(kdx_args("run", str(lab / "search.yaml"), "--twin", "--out", "out"), capture_output=True, text=True, cwd=elsewhere,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-1500:] + p.stderr[-1500:]
    assert "teacher: used as it stands (not trained)" in p.stdout and "distillation gain" in p.stdout
