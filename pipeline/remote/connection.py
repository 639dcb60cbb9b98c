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
        return f"ssh://{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


def parse(url: str) -> Connection:
    """Parse device.connection; raises ConnectionError_ naming the accepted forms. Passwords are refused: keys or an
    agent only."""
    if not isinstance(url, str) or "://" not in url:
        raise ConnectionError_(f"device.connection: {url!r} is not a connection; use {FORMS}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "adb":
        serial = url.split("://", 1)[1].strip("/")
        if not serial or not re.fullmatch(r"[A-Za-z0-9._:\-]+", serial):
            raise ConnectionError_(f"device.connection: {url!r} has no valid serial; use adb://SERIAL with the "
                                   f"serial `adb devices` lists")
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
    if u.path not in ("", "/"):
        raise ConnectionError_(f"device.connection: {url!r} has a path; use ssh://USER@HOST[:PORT] only")
    try:
        port = u.port or 22
    except ValueError:
        raise ConnectionError_(f"device.connection: {url!r} has an invalid port; use a number 1-65535") from None
    return Connection("ssh", host=u.hostname, user=u.username, port=port)
