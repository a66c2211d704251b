"""The README's promises: its test command is exactly the one CI runs."""

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
