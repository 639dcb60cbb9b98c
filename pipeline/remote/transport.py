"""Running commands on and copying files to a device: OpenSSH's `ssh`/`scp` for boards, `adb` for phones.

The system OpenSSH client rather than a Python SSH library: it is the maintained reference implementation, it already
uses the user's agent, keys, ~/.ssh/config (ProxyJump to a board behind a gateway) and hashed known_hosts, and it adds
no dependency. It runs with BatchMode (never a password prompt) and StrictHostKeyChecking=yes against
`device.known_hosts` (or the user's own), so an unknown or changed host key stops the run.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.remote.connection import Connection


class RemoteError(RuntimeError):
    """A step on the device failed; the message names the cause and the fix. Nothing of the run was recorded."""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _classify(conn: Connection, step: str, stderr: str, known_hosts: str | None) -> str | None:
    """The fix for a failed ssh/scp call, from OpenSSH's own messages; None when it is not a transport failure."""
    s = stderr
    kh = known_hosts or "~/.ssh/known_hosts"
    hostspec = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in s:
        return (f"{step}: the host key of {conn} has CHANGED since it was recorded in {kh}. If the board was "
                f"reinstalled, remove the old key (ssh-keygen -R '{hostspec}' -f {kh}) and add the new one after "
                f"checking its fingerprint on the board; otherwise do not connect")
    if "Host key verification failed" in s or "No ED25519 host key is known" in s or "host key is known" in s:
        return (f"{step}: the host key of {conn} is not in {kh}. Check the fingerprint on the board "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add it: ssh-keyscan -p {conn.port} "
                f"{conn.host} >> {kh} (or set device.known_hosts to a file that has it)")
    if "Permission denied" in s or "Too many authentication failures" in s:
        return (f"{step}: {conn} refused the login of {conn.user!r} (keys or an agent only, no passwords): load the "
                f"key into ssh-agent (ssh-add KEY; SSH_AUTH_SOCK must be set) and put its public half in "
                f"~{conn.user}/.ssh/authorized_keys on the board")
    if any(m in s for m in ("Connection refused", "No route to host", "Could not resolve hostname",
                            "Connection timed out", "Network is unreachable", "Operation timed out")):
        first = next((l for l in s.splitlines() if l.strip()), s.strip())
        return (f"{step}: cannot reach {conn} ({first.strip()}). Check that the board is on, that sshd runs on port "
                f"{conn.port}, and the host in device.connection")
    if any(m in s for m in ("Connection reset", "Broken pipe", "closed by remote host", "not responding",
                            "Connection closed", "client_loop: send disconnect")):
        return (f"{step}: the link to {conn} dropped. Check the network or cable and re-run; nothing of this run "
                f"was recorded")
    if "No space left on device" in s or "Disk quota exceeded" in s:
        return (f"{step}: the disk of {conn} is full. Free space in the board's temporary folder (df -h /tmp on "
                f"the board) or point TMPDIR at a larger filesystem for {conn.user!r}, then re-run")
    return None


class Ssh:
    def __init__(self, conn: Connection, known_hosts: str | None, connect_timeout_s: float = 10):
        if shutil.which("ssh") is None or shutil.which("scp") is None:
            raise RemoteError("the OpenSSH client (ssh, scp) is not installed on this machine: apt-get install "
                              "openssh-client (macOS has it)")
        if known_hosts is not None and not Path(known_hosts).expanduser().is_file():
            raise RemoteError(f"device.known_hosts: {known_hosts} does not exist; create it with the board's host "
                              f"key (ssh-keyscan -p {conn.port} {conn.host} > {known_hosts}, after checking the "
                              f"fingerprint on the board) or leave it null for ~/.ssh/known_hosts")
        self.conn, self.known_hosts = conn, known_hosts
        self.opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "PasswordAuthentication=no",
                     "-o", "KbdInteractiveAuthentication=no", "-o", f"ConnectTimeout={int(connect_timeout_s)}",
                     "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if known_hosts is not None:
            kh = str(Path(known_hosts).expanduser())
            self.opts += ["-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null"]
        self.target = f"{conn.user}@{conn.host}"

    def _call(self, argv: list[str], step: str, timeout_s: float) -> Result:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{step}: {self.conn} did not finish within {timeout_s:.0f} s. Raise "
                              f"device.remote_timeout_s (a slow board, many iterations) or lower "
                              f"benchmark.iterations; nothing of this run was recorded") from None
        if p.returncode == 255 or (p.returncode != 0 and argv[0] == "scp"):
            raise RemoteError(_classify(self.conn, step, p.stderr, self.known_hosts)
                              or f"{step}: {argv[0]} to {self.conn} failed: {p.stderr.strip()[-800:]}")
        return Result(p.returncode, p.stdout, p.stderr)

    def run(self, command: str, step: str, timeout_s: float) -> Result:
        return self._call(["ssh", *self.opts, "-p", str(self.conn.port), self.target, command], step, timeout_s)

    def put(self, files: list[Path], remote_dir: str, step: str, timeout_s: float) -> None:
        self._call(["scp", "-q", *self.opts, "-P", str(self.conn.port), *map(str, files),
                    f"{self.target}:{shlex.quote(remote_dir)}/"], step, timeout_s)


class Adb:
    """An Android phone over `adb`: push to a scratch folder under /data/local/tmp and run there."""

    def __init__(self, conn: Connection):
        if shutil.which("adb") is None:
            raise RemoteError("adb is not installed on this machine: install Android platform-tools "
                              "(apt-get install adb) and authorise this computer on the phone")
        self.conn = conn
        self.base = ["adb", "-s", conn.serial]

    def _call(self, argv: list[str], step: str, timeout_s: float) -> Result:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{step}: {self.conn} did not finish within {timeout_s:.0f} s; raise "
                              f"device.remote_timeout_s or lower benchmark.iterations") from None
        err = p.stderr + p.stdout
        if "device '" in err and "not found" in err or "no devices" in err:
            raise RemoteError(f"{step}: no phone with serial {self.conn.serial} (adb devices lists the connected "
                              f"ones); plug it in and enable USB debugging")
        if "unauthorized" in err:
            raise RemoteError(f"{step}: {self.conn} has not authorised this computer: accept the USB debugging "
                              f"prompt on the phone")
        if "No space left on device" in err:
            raise RemoteError(f"{step}: the phone's /data/local/tmp is full; free space and re-run")
        if argv[3] == "push" and p.returncode != 0:
            raise RemoteError(f"{step}: adb push to {self.conn} failed: {err.strip()[-800:]}")
        return Result(p.returncode, p.stdout, p.stderr)

    def run(self, command: str, step: str, timeout_s: float) -> Result:
        # adb shell drops the remote exit status on old phones: append it to stdout
        r = self._call([*self.base, "shell", f"{command}; echo __rc=$?"], step, timeout_s)
        out, _, rc = r.stdout.rpartition("__rc=")
        return Result(int(rc.strip() or 1), out, r.stderr)

    def put(self, files: list[Path], remote_dir: str, step: str, timeout_s: float) -> None:
        self._call([*self.base, "push", *map(str, files), remote_dir + "/"], step, timeout_s)
