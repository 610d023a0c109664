"""Command line: `python -m quickstart run | status | download | teardown | localcloud`.

Only argparse and the settings module are imported up front; the Azure SDKs, the tutorial and the
local cloud are imported when a command needs them, so `--help` answers at once.

Every failure ends in one line on stderr and a non-zero status, never a traceback (set
QUICKSTART_DEBUG=1 to see one), and no secret from the settings ever reaches the output.
"""

import argparse
import contextlib
import importlib
import logging
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

from quickstart.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings

DEFAULT_STATE_DIR = Settings.state_dir

USAGE_ERROR = 2
FAILED = 1
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
TERMINATED = 143  # 128 + SIGTERM


INTERRUPTED_LINE = (
    "Interrupted. What was created so far stays; remove it with `python -m quickstart teardown`."
)
INTERRUPTED_LINES = {
    "run": "Stopped. What was created so far stays, and a submitted job keeps running in the "
    "cloud: `python -m quickstart run` (or `status --follow`) reattaches to it and downloads its "
    "files, `python -m quickstart status` shows it, `python -m quickstart teardown` removes "
    "everything.",
}


class CommandError(Exception):
    """A failure the user can act on; its message is printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix (no usage dump); exit status 2."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = OneLineParser(
        prog="quickstart",
        description="The Azure Batch AI CNTK quickstart (2018), runnable today against the local "
        "cloud or Azure. Settings come from an ini file (see config.example.ini) and AZURE_* "
        "environment variables; without a config file everything runs on the local cloud.",
    )
    parser.add_argument("--version", action=PrintVersion, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            metavar="FILE",
            default=None,
            help=f"settings file (default: ./{DEFAULT_CONFIG} when it exists)",
        )
        sub.add_argument(
            "--state-dir",
            metavar="DIR",
            default=None,
            help="the local cloud's state folder, holding connection.json (default: the "
            "state_dir setting or QUICKSTART_STATE_DIR, else ./.localcloud)",
        )
        return sub

    run = command(
        "run",
        "Walk every step of the quickstart: upload the sample, create the workspace, "
        "cluster and experiment, run the CNTK job, stream its output, download the models. "
        "Exits 0 when the job succeeds, else with the job's exit code.",
    )
    run.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="train for N epochs (appends --max-epochs N to the job's command line)",
    )
    run.add_argument(
        "--nodes",
        type=int,
        metavar="N",
        help="a cluster of N nodes and the job on all of them, trained data-parallel under "
        "MPI (overrides [cluster] node_count)",
    )
    teardown = command(
        "teardown",
        "Delete the jobs, experiment, cluster, workspace and resource group, and "
        "on the local cloud the file share; what is already gone is skipped.",
    )
    share = teardown.add_mutually_exclusive_group()
    share.add_argument(
        "--delete-share",
        dest="delete_share",
        action="store_true",
        default=None,
        help="also delete the file share with the sample data and the jobs' files (the default "
        "on the local cloud; on Azure the share is kept unless asked)",
    )
    share.add_argument(
        "--keep-share",
        dest="delete_share",
        action="store_false",
        help="keep the file share (the sample and the jobs' files on it)",
    )
    download = command(
        "download",
        "Download a finished job's model files and logs into <download_dir>/<job>/ "
        "(./outputs/<job>/ by default), as `run` does at its end.",
    )
    download.add_argument(
        "job", nargs="?", metavar="JOB", help="the job's name (default: the latest job)"
    )
    status = command(
        "status",
        "Show the cluster's state, the latest job's state (with the last lines of its "
        "output while it runs) and its output files.",
    )
    status.add_argument(
        "--follow",
        action="store_true",
        help="watch a running job to its end, streaming its output, then download its files "
        "as `run` does; exit with its exit code",
    )
    local = command(
        "localcloud",
        "Serve the local cloud in the foreground until Ctrl-C, for any client; "
        "connection details go to <state_dir>/connection.json.",
    )
    local.add_argument(
        "--port", type=port_number, default=0, help="port on 127.0.0.1 (default: a free port)"
    )
    local.add_argument(
        "--host",
        metavar="ADDRESS",
        help="bind this IP address instead of 127.0.0.1, for jobs on other hosts (Ray nodes) "
        "that call the local cloud; the certificate is made to cover it and authentication "
        "stays as strict. Explicit opt-in only: firewall it (docs/ray.md)",
    )
    local.add_argument(
        "--compute",
        choices=("local", "ray"),
        help="where cluster nodes and jobs run: local (processes on this machine, the default) "
        "or ray (a Ray cluster: placement groups and actors; see docs/ray.md); also the "
        "compute setting or QUICKSTART_COMPUTE",
    )
    local.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster to use with --compute ray (default: auto, the one this machine "
        "is part of); also the ray_address setting or QUICKSTART_RAY_ADDRESS",
    )
    local.add_argument(
        "--verbose",
        action="store_true",
        help="echo every request's full access-log line (default: one readable line per API "
        "call; all lines go to <state_dir>/access.log)",
    )
    return parser


def port_number(text):
    """A TCP port for argparse: 0 (any free port) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


class PrintVersion(argparse.Action):
    """--version, looked up only when asked for (the package metadata is slow to read)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def package_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("batchai-cntk-quickstart")
    except PackageNotFoundError:
        return "(not installed: run `.venv/bin/pip install -e .`)"


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_library_logs()
    overrides = {
        "epochs": getattr(args, "epochs", None),
        "node_count": getattr(args, "nodes", None),
        "state_dir": getattr(args, "state_dir", None),
        "compute": getattr(args, "compute", None),
        "ray_address": getattr(args, "ray_address", None),
    }
    try:
        settings = load_settings(
            args.config, overrides=overrides, warn=lambda line: print(line, file=sys.stderr)
        )
    except ConfigError as error:
        for problem in error.problems:
            print("config error: " + problem, file=sys.stderr)
        return USAGE_ERROR
    secrets = settings.secret_values()  # the commands add the local cloud's as they bind them
    with terminate_as_interrupt() as terminated:
        try:
            code = COMMANDS[args.command](args, settings, secrets)
        except KeyboardInterrupt:
            print("\n" + INTERRUPTED_LINES.get(args.command, INTERRUPTED_LINE), file=sys.stderr)
            code = INTERRUPTED
        except Exception as error:  # one line, never a traceback, never a secret
            if os.environ.get("QUICKSTART_DEBUG"):
                raise
            print("error: " + describe(error, secrets), file=sys.stderr)
            return FAILED
    return TERMINATED if terminated and code == INTERRUPTED else code


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (`kill`, a closing session) ends a command as Ctrl-C does: the same closing line,
    the embedded local cloud stopped in order, the job left running; exit status 143. Yields a
    list that is non-empty once SIGTERM has arrived."""
    terminated = []

    def interrupt(signum, frame):
        terminated.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield terminated
        return
    try:
        yield terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def quiet_library_logs():
    """The SDKs log each failed attempt (the storage SDK even before retrying); the command reports
    the failure itself, once. QUICKSTART_DEBUG=1 keeps their warnings."""
    root = logging.getLogger()
    if not root.handlers and not os.environ.get("QUICKSTART_DEBUG"):
        root.addHandler(logging.NullHandler())


def describe(error, secrets):
    """One line for an exception: the SDKs' messages span lines and may quote a request."""
    text = " ".join(str(error).split()) or type(error).__name__
    if type(error).__name__ not in ("CommandError", "StepFailed"):
        text = f"{type(error).__name__}: {text}"
    for secret in secrets:
        text = text.replace(secret, "***")
    text = re.sub(r"([?&]sig=)[^&\s]+", r"\1***", text)  # SAS signatures in URLs
    text = re.sub(r"(Bearer\s+)\S+", r"\1***", text, flags=re.I)
    return text if len(text) <= 500 else text[:497] + "..."


def run_command(args, settings, secrets):
    from quickstart.timing import StepClock

    clock = StepClock()  # its summary line covers loading the SDKs and starting the local cloud too
    with clock.step("start-up"):
        from quickstart import steps
    with connected(settings, secrets, clock) as settings, clock.running():
        code = steps.run(settings)
    print(clock.summary())
    return code


def teardown_command(args, settings, secrets):
    if never_ran_here(settings):
        return 0
    from quickstart.teardown import teardown

    with connected(settings, secrets) as settings:
        return teardown(settings, delete_share=args.delete_share)


def status_command(args, settings, secrets):
    if never_ran_here(settings):
        return 0
    from quickstart.status import status

    with connected(settings, secrets) as settings:
        return status(settings, follow=args.follow)


def download_command(args, settings, secrets):
    if never_ran_here(settings):
        return FAILED
    from quickstart.status import download

    with connected(settings, secrets) as settings:
        return download(settings, args.job)


def never_ran_here(settings):
    """For the local cloud without a state directory there is nothing to show or remove, and no
    reason to create one."""
    if not settings.is_local or os.path.isdir(settings.state_dir):
        return False
    print(
        f"The local cloud has no state in {settings.state_dir} yet: nothing exists. "
        "Start with `python -m quickstart run`."
    )
    return True


def localcloud_command(args, settings, secrets):
    localcloud = import_local_cloud()
    state_dir = os.path.abspath(settings.state_dir)
    print(f"Serving the local cloud from {state_dir} (Ctrl-C to stop). In another terminal:")
    print(f"  {python_command()} -m quickstart run --state-dir {shlex.quote(state_dir)}")
    print(f"  (or: export QUICKSTART_STATE_DIR={shlex.quote(state_dir)})", flush=True)
    options = {"verbose": True} if getattr(args, "verbose", False) else {}
    options.update(compute_options(settings))
    if getattr(args, "host", None):
        options["host"] = args.host
    if settings.compute != "local":
        where = settings.ray_address or "auto"
        print(f"Compute: {settings.compute} (the Ray cluster at {where})", flush=True)
    return localcloud.serve_forever(settings.state_dir, args.port, **options) or 0  # 2: busy


def compute_options(settings):
    """The local cloud's compute options from the settings (local: none, the default)."""
    if settings.compute == "local":
        return {}
    return {
        "compute": settings.compute,
        "ray_address": settings.ray_address or None,
        "ray_bundles": settings.ray_bundles or None,
    }


def python_command():
    """How to call this Python from the current folder: `python` where that is this Python
    (an activated virtual environment), else its path."""
    found = shutil.which("python")
    if found and os.path.samefile(found, sys.executable):
        return "python"
    relative = os.path.relpath(sys.executable)
    return shlex.quote(relative if not relative.startswith("..") else sys.executable)


@contextlib.contextmanager
def connected(settings, secrets, clock=None):
    """Settings bound to the cloud the command talks to for its duration.

    For an Azure cloud, the settings as they are. For the local cloud: the one already serving from
    the state directory (connection.json answers its health probe), else one started here and
    stopped when the command ends (jobs keep running; the next command sees how they ended).
    If the command serving the borrowed one ends first, this command takes over serving it, at the
    same URL (localcloud.Standby). The bound settings' secrets are added to `secrets`, so error
    messages can hide them. With a `clock`, starting the local cloud counts in its step "start-up".
    """
    if not settings.is_local:
        yield settings
        return
    localcloud = import_local_cloud()
    from quickstart.localcloud.connection import is_serving, read_connection

    connection = read_connection(settings.state_dir)
    serving = connection and is_serving(connection)
    if connection and not serving and Path(settings.state_dir) != Path(DEFAULT_STATE_DIR):
        print(
            f"The local cloud that served from {settings.state_dir} is gone; starting one for "
            "this command (`python -m quickstart localcloud` serves one for every terminal)"
        )
    if serving:
        print(f"Using the local cloud serving at {connection['resource_manager_url']}")
        with localcloud.Standby(settings.state_dir, on_take_over=announce_take_over):
            yield bound(settings, connection, secrets)
        return
    with clock.step("start-up") if clock else contextlib.nullcontext():
        cloud = localcloud.LocalCloud(settings.state_dir, **compute_options(settings)).start()
    try:
        url = cloud.connection["resource_manager_url"]
        print(f"Started the local cloud at {url} for this command (state in {settings.state_dir})")
        yield bound(settings, cloud.connection, secrets)
    finally:
        cloud.stop()


def announce_take_over(cloud):
    print(
        "The command that served the local cloud has ended; this command serves it now at "
        + cloud.connection["resource_manager_url"],
        flush=True,
    )


def bound(settings, connection, secrets):
    settings = settings.bind_local_cloud(connection)
    secrets.extend(settings.secret_values())
    return settings


def import_local_cloud():
    try:
        localcloud = importlib.import_module("quickstart.localcloud")
        localcloud.LocalCloud, localcloud.serve_forever  # noqa: B018  (the package may predate its server)
    except (ImportError, AttributeError):
        raise CommandError(
            "cloud = local: the local cloud is not available yet in this checkout; "
            "set cloud = AzureCloud (or another Azure cloud) in the config file to use Azure"
        ) from None
    return localcloud


COMMANDS = {
    "run": run_command,
    "teardown": teardown_command,
    "status": status_command,
    "download": download_command,
    "localcloud": localcloud_command,
}

if __name__ == "__main__":
    sys.exit(main())
