"""The README's commands and code work verbatim, as a newcomer copies them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
ACTIVATE = "source .venv/bin/activate"
# Commands the README shows that are cheap enough to run here exactly as written.
RUN_VERBATIM = {"python -m quickstart.sample"}


def blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```$", README, re.M | re.S)


def shell_commands():
    return [line for block in blocks("sh") for line in block.splitlines() if line.strip()]


def model_loading_code():
    section = README.split("## Using the trained model", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"^```python\n(.*?)^```$", section, re.M | re.S)
    return code


def test_the_first_command_makes_and_activates_the_environment_every_later_one_needs():
    commands = shell_commands()
    assert commands[0] == f"python3 -m venv .venv && {ACTIVATE}"
    for command in commands[1:]:
        first_word = command.split()[0]
        assert first_word in ("pip", "python", "ruff"), command  # all in the activated .venv
        assert ".venv/bin/" not in command, command  # one way throughout: the activated one


@pytest.mark.skipif(
    not (REPO / ".venv" / "bin" / "activate").is_file(), reason="no .venv in the repository"
)
@pytest.mark.parametrize("command", sorted(RUN_VERBATIM))
def test_cheap_commands_run_verbatim_after_the_activation(command):
    assert command in shell_commands()
    result = subprocess.run(
        ["bash", "-c", f"{ACTIVATE} && {command}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_model_loading_code_is_complete_python():
    code = model_loading_code()
    compile(code, "README.md", "exec")
    assert 'glob.glob("outputs/*/ConvNet_MNIST_*.pt")' in code  # where `run` downloads them


def run_model_loading_code(workdir):
    """The README's model-loading block, run as written from the folder `run` ran in."""
    return subprocess.run(
        [sys.executable, "-c", model_loading_code()],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
