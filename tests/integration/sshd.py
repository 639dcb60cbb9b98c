"""A throw-away OpenSSH server on 127.0.0.1 standing in for a board, with its own host key and config, a key pair
made here and loaded into an ssh-agent started here, and a known_hosts file naming the server's key.

Only the processes started here are stopped here (each in its own session, stopped by process group)."""
from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from services import free_port, stop_group, wait_port

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def missing() -> str | None:
    """Why the SSH tests cannot run here, or None."""
    if SSHD is None:
        return "OpenSSH server not installed (make system-deps installs openssh-server; or apt-get install openssh-server)"
    for tool in ("ssh", "scp", "ssh-keygen", "ssh-agent", "ssh-add"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install openssh-client)"
    return None


@dataclass
class Board:
    root: Path
    port: int
    user: str
    known_hosts: Path
    agent_sock: str
    connection: str
    env: dict  # os.environ additions for the client (SSH_AUTH_SOCK)


@contextlib.contextmanager
def ssh_board(extra_config: str = "", sftp: bool = True) -> Iterator[Board]:
    """`sftp=False`: an sshd without the SFTP subsystem (as some embedded boards ship), which scp's default protocol
    needs."""
    root = Path(tempfile.mkdtemp(prefix="dev-sshd-", dir="/tmp"))
    procs: list[subprocess.Popen] = []
    try:
        keygen = lambda path: subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edge-test",
                                              "-f", str(path)], check=True, capture_output=True)
        keygen(root / "host_key")
        keygen(root / "user_key")
        (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
        os.chmod(root / "authorized_keys", 0o600)
        port, user = free_port(), getpass.getuser()
        sftp_server = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
                                 "/usr/lib/ssh/sftp-server") if Path(p).exists()), "internal-sftp")
        (root / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            f"AllowUsers {user}\n" + (f"Subsystem sftp {sftp_server}\n" if sftp else "") + f"LogLevel ERROR\n{extra_config}")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
        log = root / "sshd.log"
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(sshd)
        wait_port(port, 20, "sshd", sshd, log)
        sock = str(root / "agent.sock")
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(agent)
        env = {"SSH_AUTH_SOCK": sock}
        # the socket file appears when the agent binds it, a moment before it listens: add the key until it takes it
        deadline = time.time() + 20
        while True:
            added = subprocess.run(["ssh-add", "-q", str(root / "user_key")], capture_output=True, text=True,
                                   env={**os.environ, **env})
            if added.returncode == 0:
                break
            if time.time() > deadline or agent.poll() is not None:
                raise RuntimeError(f"ssh-agent did not take the test key: {added.stderr.strip()}")
            time.sleep(0.1)
        (root / "user_key").unlink()  # from here on the key exists only in the agent
        host_pub = (root / "host_key.pub").read_text().split()
        kh = root / "known_hosts"
        kh.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        yield Board(root, port, user, kh, sock, f"ssh://{user}@127.0.0.1:{port}", env)
    finally:
        for p in reversed(procs):
            stop_group(p, timeout=5)
        shutil.rmtree(root, ignore_errors=True)


def device_entry(board: Board, **over) -> dict:
    """A device catalogue entry for `board`: a Raspberry Pi reached over SSH, running this interpreter."""
    return {"name": "rpi4", "display_name": "Raspberry Pi 4", "connection": board.connection,
            "known_hosts": str(board.known_hosts), "remote_python": sys.executable, **over}


# Fixtures of the SSH tests (imported by their modules): one board per test module, and the client's environment
# pointed at its ssh-agent.
@pytest.fixture(scope="module")
def board():
    with ssh_board() as b:
        yield b


@pytest.fixture
def agent(board, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", board.agent_sock)
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the board sees no pipeline package
    return board

