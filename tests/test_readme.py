"""The README's Python code blocks run as written, in order, in one fresh interpreter, so they cannot rot.

The only concession to test time is ``LWTA_README_SMOKE=1``, read by the snippet's own lines (2 images, 2 attack
steps instead of 10 and 100): the code users copy is the code that runs. It needs robustbench, torchattacks,
pyautoattack and the shipped ``lwta_ibp_tanh16``; a few minutes on 2 cores, hence slow.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def test_blocks_are_found():
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    use = blocks[0]
    assert "load_model(" in use and "x, y = load_tensors(" in use and "LWTA_README_SMOKE" in use
    assert "tqdm(" in use and "batch_size=" in use  # progress bar on the EOT line; pyautoattack's keyword
    assert python_blocks("a\n```python\nx = 1\n```\n```bash\nls\n```\n") == ["x = 1\n"]


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    missing = [m for m in ("robustbench", "torchattacks", "pyautoattack") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the README's Use snippet needs {', '.join(missing)}")
    code = "\n".join(python_blocks((ROOT / "README.md").read_text(encoding="utf-8")))
    code += "\nimport json\nprint('README-DONE', json.dumps([n, steps, list(x_adv.shape)]))\n"
    env = dict(os.environ, LWTA_README_SMOKE="1", OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1800, check=False)
    assert out.returncode == 0, out.stderr[-4000:]
    done = [line for line in out.stdout.splitlines() if line.startswith("README-DONE ")]
    assert done and json.loads(done[0].split(" ", 1)[1]) == [2, 2, [2, 1, 28, 28]]
    assert "EOT-PGD accuracy" in out.stdout and "AutoAttack-rand accuracy" in out.stdout
    assert "100%" in out.stderr  # the progress bar of the EOT-PGD line
    assert (tmp_path / "runs/readme/mnist/Linf/lwta_ibp_tanh16__paper.json").is_file()
