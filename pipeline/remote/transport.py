"""Running commands on and copying files to a device: OpenSSH's `ssh`/`scp` for boards, `adb` for phones.

The system OpenSSH client rather than a Python SSH library: it is the maintained reference implementation, it already
uses the user's agent, keys, ~/.ssh/config (ProxyJump to a board behind a gateway) and hashed known_hosts, and it adds
no dependency. It runs with BatchMode (never a password prompt) and StrictHostKeyChecking=yes against
`device.known_hosts` (or the user's own), so an unknown or changed host key stops the run.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.remote.connection import Connection

log = logging.getLogger("pipeline")


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
        keys = _agent_keys()
        user = (f"check that the user {conn.user!r} exists on the board (the USER of device.connection="
                f"ssh://USER@HOST: a wrong user is refused exactly like a wrong key)")
        key = (f"load the key into ssh-agent (ssh-add KEY; SSH_AUTH_SOCK must be set) and put its public half in "
               f"~{conn.user}/.ssh/authorized_keys on the board")
        if keys:
            return (f"{step}: {conn} refused the login of {conn.user!r} although ssh-agent holds {keys} key(s): "
                    f"{user}, and that one of those keys is in ~{conn.user}/.ssh/authorized_keys there (or {key})")
        return (f"{step}: {conn} refused the login of {conn.user!r} (keys or an agent only, no passwords) and no key "
                f"is loaded in ssh-agent: {key}; and {user}")
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


def _agent_keys() -> int:
    """How many keys the user's ssh-agent holds (0: none, or no agent reachable)."""
    if not os.environ.get("SSH_AUTH_SOCK") or shutil.which("ssh-add") is None:
        return 0
    try:
        p = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len([line for line in p.stdout.splitlines() if line.strip()]) if p.returncode == 0 else 0


# scp's default (SFTP) protocol needs the board's sshd to offer the SFTP subsystem; without it the copy ends with this
NO_SFTP = ("subsystem request failed", "Connection closed")


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
        # parse() refused users and hosts that could be read as options; "--" below ends the options anyway
        self.target = f"{conn.user}@{conn.host}"
        self.scp_target = f"{conn.user}@[{conn.host}]" if ":" in conn.host else self.target
        self.legacy_scp = False  # set once the board turned out to have no SFTP subsystem

    def _exec(self, argv: list[str], step: str, timeout_s: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{step}: {self.conn} did not finish within {timeout_s:.0f} s. Raise "
                              f"device.remote_timeout_s (a slow board, many iterations) or lower "
                              f"benchmark.iterations; nothing of this run was recorded") from None

    def _failure(self, argv: list[str], step: str, stderr: str) -> RemoteError:
        return RemoteError(_classify(self.conn, step, stderr, self.known_hosts)
                           or f"{step}: {argv[0]} to {self.conn} failed: {stderr.strip()[-800:]}")

    def _call(self, argv: list[str], step: str, timeout_s: float) -> Result:
        p = self._exec(argv, step, timeout_s)
        if p.returncode == 255 or (p.returncode != 0 and argv[0] == "scp"):
            raise self._failure(argv, step, p.stderr)
        return Result(p.returncode, p.stdout, p.stderr)

    def run(self, command: str, step: str, timeout_s: float) -> Result:
        return self._call(["ssh", *self.opts, "-p", str(self.conn.port), "--", self.target, command], step,
                          timeout_s)

    def put(self, files: list[Path], remote_dir: str, step: str, timeout_s: float) -> None:
        """scp the files into remote_dir: its SFTP protocol first, its legacy one (scp -O) when the board's sshd has
        no SFTP subsystem (then for every later copy too)."""
        argv = lambda legacy: ["scp", "-q", *(["-O"] if legacy else []), *self.opts, "-P", str(self.conn.port), "--",
                               *map(str, files), f"{self.scp_target}:{shlex.quote(remote_dir)}/"]
        p = self._exec(argv(self.legacy_scp), step, timeout_s)
        if p.returncode == 0:
            return
        if self.legacy_scp or not any(m in p.stderr for m in NO_SFTP):
            raise self._failure(argv(self.legacy_scp), step, p.stderr)
        legacy = self._exec(argv(True), step, timeout_s)
        if legacy.returncode == 0:
            self.legacy_scp = True
            log.info("%s: the board's sshd offers no SFTP subsystem: copying with scp's legacy protocol (scp -O)",
                     self.conn)
            return
        why = _classify(self.conn, step, legacy.stderr, self.known_hosts) or legacy.stderr.strip()[-600:]
        raise RemoteError(f"{step}: scp to {self.conn} failed with its SFTP protocol ({p.stderr.strip()[-200:]}: the "
                          f"board's sshd may offer no SFTP subsystem; add 'Subsystem sftp internal-sftp' to its "
                          f"sshd_config) and with its legacy protocol, scp -O ({why})")


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
