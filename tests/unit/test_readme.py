import re

from tests.paths import REPO_ROOT


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return [c.strip() for c in re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", text)]


def test_readme_has_the_two_fresh_machine_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m raylane run")
    assert commands[1].endswith("ruff check && .venv/bin/ruff format --check && .venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci
