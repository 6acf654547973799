"""The README's two commands, `make up` and `make test`, without running either: what make would
run (`make -n`), and which Python environment scripts/setup picks and what it would do with it
(`--dry-run`, where QUORUMDB_SETUP_UID stands in for the user id). scripts/check-quickstart runs
`make up` for real on a clean clone (a CI step of its own)."""
import os
import pathlib
import shlex
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
SETUP = ROOT / "scripts" / "setup"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a newcomer's shell: no virtual environment, no PYTHON override."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHON", "QUORUMDB_SETUP_UID", "MAKEFLAGS", "MAKELEVEL", "MFLAGS",
                         "MAKEOVERRIDES", "PYTEST_ARGS", "ARGS")}
    env.update(extra)
    return env


def make_n(*args: str, env: dict[str, str] | None = None) -> list[list[str]]:
    out = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), *args], env=env or clean_env(),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def dry_run(mode: str, *command: str, **env: str) -> tuple[str, list[list[str]]]:
    """scripts/setup --dry-run: its `python:` line and the commands it would run (without the `+ `)."""
    proc = subprocess.run(["bash", str(SETUP), "--dry-run", mode, "--", *command], env=clean_env(**env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    python = next(line for line in lines if line.startswith("setup: python: "))
    commands = [shlex.split(line[2:]) for line in lines if line.startswith("+ ")]
    return python, commands


def test_make_help_is_the_default_and_names_both_commands():
    out = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT)], env=clean_env(), capture_output=True,
                         text=True, timeout=60, check=True).stdout
    targets = [line.split()[1] for line in out.splitlines() if line.startswith("make ")]
    assert targets[:2] == ["up", "test"], out
    assert "help" in targets


def test_make_up_sets_up_to_run_then_starts_the_default_cluster():
    assert make_n("up") == [["bash", "scripts/setup", "run", "--", "quorumdb", "up"]]
    # Options reach `quorumdb up` unchanged.
    assert make_n("up", "ARGS=--data-dir /tmp/x --base-port 7200") == [
        ["bash", "scripts/setup", "run", "--", "quorumdb", "up", "--data-dir", "/tmp/x", "--base-port", "7200"]]


def test_make_test_sets_up_the_tests_then_runs_the_default_suite():
    # No path, no -m: pytest's own configuration (pyproject.toml) decides the default suite.
    assert make_n("test") == [["bash", "scripts/setup", "test", "--", "python", "-m", "pytest", "-p", "no:cacheprovider"]]
    assert make_n("test", "PYTEST_ARGS=--basetemp /tmp/b -ra")[0][-3:] == ["--basetemp", "/tmp/b", "-ra"]


def test_ci_runs_the_suite_through_make_test_and_checks_the_quickstart():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'make --no-print-directory test PYTEST_ARGS="--basetemp $BASETEMP/pytest -ra --durations=15"' in ci
    assert 'bash scripts/check-quickstart "$BASETEMP/quickstart"' in ci
    assert "quickstart: $QUICKSTART_RESULT" in ci


def test_an_active_virtual_environment_is_used_whoever_runs_it(tmp_path):
    venv = tmp_path / "myvenv"
    for uid in ("0", "1000"):
        python, commands = dry_run("run", "quorumdb", "up", VIRTUAL_ENV=str(venv), QUORUMDB_SETUP_UID=uid)
        assert python.startswith(f"setup: python: {venv}/bin/python "), python
        pip = next(c for c in commands if c[1:4] == ["-m", "pip", "install"])
        assert pip[0] == f"{venv}/bin/python"
        assert "--break-system-packages" not in pip   # a virtual environment is never externally managed
        assert pip[-2:] == ["-e", str(ROOT)]
        assert not any(c[1:3] == ["-m", "venv"] for c in commands)   # no .venv of its own
        assert commands[-1] == ["exec", "quorumdb", "up"]


def test_root_without_a_virtual_environment_uses_the_system_python():
    python, commands = dry_run("test", "python", "-m", "pytest", QUORUMDB_SETUP_UID="0")
    system = subprocess.run(["bash", "-c", "command -v python3"], env=clean_env(), capture_output=True, text=True,
                            timeout=10).stdout.strip()
    assert python.startswith(f"setup: python: {system} "), python
    assert not any(c[1:3] == ["-m", "venv"] for c in commands)
    # The pip install is shown when this checkout is not yet what that python imports; either way
    # the suite runs with that python.
    assert commands[-1] == ["exec", system, "-m", "pytest"]


def test_a_normal_user_without_a_virtual_environment_gets_dot_venv():
    python, commands = dry_run("test", "python", "-m", "pytest", "-p", "no:cacheprovider", QUORUMDB_SETUP_UID="1000")
    venv_python = f"{ROOT}/.venv/bin/python"
    assert python.startswith(f"setup: python: {venv_python} "), python
    if not (ROOT / ".venv").exists():
        assert ["python3", "-m", "venv", f"{ROOT}/.venv"] in commands
    assert [venv_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "-e", f"{ROOT}[test]"] in commands or not any(c[1:4] == ["-m", "pip", "install"] for c in commands)
    # The Debian packages the tests need, then the default suite with the .venv's python.
    scripts = [pathlib.Path(c[1]).name for c in commands if c[0] == "bash"]
    assert scripts == ["install-postgres", "install-observability", "install-haproxy"]
    assert commands[-1] == ["exec", venv_python, "-m", "pytest", "-p", "no:cacheprovider"]
    assert not (ROOT / ".venv").exists() or (ROOT / ".venv" / "bin" / "python").exists()


def test_up_installs_no_debian_packages():
    _, commands = dry_run("run", "quorumdb", "up", QUORUMDB_SETUP_UID="1000")
    assert not any(c[0] in ("bash", "sudo", "apt-get") for c in commands), commands


def test_the_uid_stand_in_only_counts_in_a_dry_run():
    # Without --dry-run, QUORUMDB_SETUP_UID must not change the choice: --print-python follows `id -u`.
    real = subprocess.run(["bash", str(SETUP), "--print-python"], env=clean_env(QUORUMDB_SETUP_UID="1000"),
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    if os.getuid() == 0:
        assert not real.endswith("/.venv/bin/python"), real
    else:
        assert real == f"{ROOT}/.venv/bin/python"


def test_the_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_section = readme.split("\n## ", 2)[1]
    assert first_section.startswith("Two commands")
    assert "make up" in first_section and "make test" in first_section
    assert readme.index("make up") < readme.index("## Quickstart")


def test_a_usage_error_says_how_to_call_it():
    proc = subprocess.run(["bash", str(SETUP), "--dry-run"], env=clean_env(), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "run (make up) or test (make test)" in proc.stderr

