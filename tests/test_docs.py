"""The README's promises: its test command is exactly the one CI runs, its examples run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "bash scripts/setup.sh && python -m pytest -q"
    assert f"```bash\n{command}\n```" in readme
    assert f"\n{command}\n" in ci


def test_readme_demo_command_exists():
    readme = (ROOT / "README.md").read_text()
    assert "```bash\nbash scripts/setup.sh && python -m inmaterio demo\n```" in readme


def test_readme_python_examples_run():
    """Every ```python block of the README runs, in order, in one namespace (they build on each other)."""
    import re

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["on_surrogate"].shape == (8,)
    assert float(namespace["on_surrogate"].max()) == 1.0  # at least one of the eight finds XOR
