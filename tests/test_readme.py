"""README snippets run as tests, and the README's commands stay in sync with .ci/run."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("i", range(len(SNIPPETS)))
def test_readme_python_snippet_runs(i):
  exec(compile(SNIPPETS[i], f"README.md:snippet{i}", "exec"), {})


def test_ci_runs_the_readme_test_command():
  bash = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
  test_cmd = [b.strip() for b in bash if "pytest" in b]
  assert len(test_cmd) == 1
  assert test_cmd[0] in (ROOT / ".ci" / "run").read_text()
