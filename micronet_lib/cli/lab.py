"""``micronet lab``: JupyterLab on ``notebooks/`` with this environment as the kernel (issue #12).

``make lab`` runs it. The kernel named ``python3`` (the notebooks' kernel) must be this
environment's Python, not whatever a user-level kernelspec or ``python`` on PATH points at:
``JUPYTER_PREFER_ENV_PATH=1`` puts the environment's kernelspec (ipykernel's, whose ``python`` argv
jupyter_client replaces by the server's ``sys.executable``) before the user's.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from micronet_lib.pipeline.nbmeta import PRE_SAVE_HOOK

__all__ = ["lab_command", "lab_environment", "lab_url", "register"]


def lab_command(*, notebooks: str | os.PathLike, port: int, ip: str, token: str, browser: bool) -> list[str]:
    """The ``python -m jupyterlab`` command line serving ``notebooks`` on ``ip:port`` with ``token``."""
    cmd = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.root_dir={Path(notebooks).resolve()}",
        f"--ServerApp.ip={ip}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # a busy port is an error, so the printed URL is the real one
        f"--IdentityProvider.token={token}",
        f"--ServerApp.open_browser={browser}",
        # Saving puts the committed notebook metadata back, so opening and saving leaves no diff (pipeline.nbmeta).
        f"--ContentsManager.pre_save_hook={PRE_SAVE_HOOK}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")  # containers run as root; Jupyter refuses it otherwise
    return cmd


def lab_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with this environment's kernelspecs preferred over the user's."""
    return {**(os.environ if base is None else base), "JUPYTER_PREFER_ENV_PATH": "1"}


def lab_url(*, ip: str, port: int, token: str) -> str:
    """Where the server answers: ``http://<ip>:<port>/lab?token=<token>``."""
    host = "127.0.0.1" if ip in ("", "0.0.0.0") else ip
    return f"http://{host}:{port}/lab" + (f"?token={token}" if token else "")


def _port(text: str) -> int:
    import argparse

    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 1..65535")
    return value


def register(sub) -> None:
    p = sub.add_parser("lab", help="JupyterLab on notebooks/ with this environment's Python as the kernel")
    p.add_argument("--port", type=_port, default=8888, help="port to serve on (default 8888; busy = error)")
    p.add_argument("--ip", default="127.0.0.1", help="interface to listen on (0.0.0.0 for a remote machine)")
    p.add_argument("--token", default=None,
                   help="access token (default: a fresh random one, printed in the URL); '' disables it")
    p.add_argument("--no-browser", dest="browser", action="store_false", help="headless: do not open a browser")
    p.add_argument("--notebooks", default=None, help="folder to serve (default the repository's notebooks/)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from micronet_lib.pipeline import notebooks_dir

    folder = Path(args.notebooks) if args.notebooks else notebooks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"--notebooks {folder} is not a folder")
    token = secrets.token_hex(24) if args.token is None else args.token
    cmd = lab_command(notebooks=folder, port=args.port, ip=args.ip, token=token, browser=args.browser)
    print(f"JupyterLab on {folder} (kernel python3 = {sys.executable})\n  open {lab_url(ip=args.ip, port=args.port, token=token)}",
          flush=True)
    os.execve(sys.executable, cmd, lab_environment())  # the server replaces this process; Ctrl-C stops it
