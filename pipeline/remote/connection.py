"""`device.connection`: where a board or phone is reached. `ssh://USER@HOST[:PORT]` or `adb://SERIAL`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

FORMS = "ssh://USER@HOST[:PORT] (a Linux board) or adb://SERIAL (an Android phone, serial from `adb devices`)"


class ConnectionError_(ValueError):
    """device.connection cannot be parsed (raised at plan time, before anything runs)."""


@dataclass(frozen=True)
class Connection:
    scheme: str  # ssh | adb
    host: str = ""  # ssh: host name or address
    user: str = ""
    port: int = 22
    serial: str = ""  # adb

    def __str__(self) -> str:
        if self.scheme == "adb":
            return f"adb://{self.serial}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")


# What OpenSSH and adb are handed as arguments: a user or host starting with '-' would be read as an option
# (ssh://-oProxyCommand=...@host runs a command on this machine), and shell or URL syntax has no place in them.
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")  # POSIX portable user names (no leading '-')
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?)*\.?")
SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # adb serials: USB ids or HOST:PORT


def _host_ok(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)  # IPv4, or IPv6 (written in brackets in the URI)
        return True
    except ValueError:
        return bool(HOSTNAME.fullmatch(host))


def parse(url: str) -> Connection:
    """Parse device.connection; raises ConnectionError_ naming the accepted forms. Passwords are refused: keys or an
    agent only. User, host and serial are checked before any process is started: no leading '-', no whitespace,
    no shell or option syntax."""
    if not isinstance(url, str) or "://" not in url:
        raise ConnectionError_(f"device.connection: {url!r} is not a connection; use {FORMS}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConnectionError_(f"device.connection: {url!r} holds whitespace or control characters; use {FORMS}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "adb":
        serial = url.split("://", 1)[1].strip("/")
        if not serial or not SERIAL.fullmatch(serial):
            raise ConnectionError_(f"device.connection: {url!r} has no valid serial; use adb://SERIAL with the "
                                   f"serial `adb devices` lists (letters, digits, '.', '_', ':', '-', not first)")
        return Connection("adb", serial=serial)
    if scheme != "ssh":
        raise ConnectionError_(f"device.connection: scheme {scheme!r} is not supported; use {FORMS}")
    u = urlsplit(url)
    if u.password is not None:
        raise ConnectionError_("device.connection: a password in the connection string is refused; remove it and "
                               "load a key into ssh-agent (ssh-add) whose public half is in the board's "
                               "~/.ssh/authorized_keys")
    if not u.username or not u.hostname:
        raise ConnectionError_(f"device.connection: {url!r} needs a user and a host: ssh://USER@HOST[:PORT]")
    if u.path not in ("", "/") or u.query or u.fragment or "?" in url or "#" in url:
        raise ConnectionError_(f"device.connection: {url!r} has a path, query or fragment; use "
                               f"ssh://USER@HOST[:PORT] only")
    if not USER.fullmatch(u.username):
        raise ConnectionError_(f"device.connection: user {u.username!r} is not a user name (letters, digits, '.', "
                               f"'_', '-', not starting with '-'); use ssh://USER@HOST[:PORT] with the board's login")
    host = u.hostname  # (lower-cased by urlsplit, brackets of an IPv6 address removed)
    if not _host_ok(host):
        raise ConnectionError_(f"device.connection: host {host!r} is not a host name or IP address (no leading "
                               f"'-', no spaces or shell characters); use ssh://USER@HOST[:PORT]")
    try:
        port = u.port
    except ValueError:
        raise ConnectionError_(f"device.connection: {url!r} has an invalid port; use a number 1-65535") from None
    if port is not None and not 1 <= port <= 65535:
        raise ConnectionError_(f"device.connection: {url!r} has an invalid port; use a number 1-65535")
    return Connection("ssh", host=host, user=u.username, port=port or 22)
