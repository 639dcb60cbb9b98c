"""What both ways of measuring on a device share: reading the device settings, words for the device's shell, and the
scratch folder the models are copied to. Imports no ML framework."""
from __future__ import annotations

import contextlib
import logging
import re
import shlex
from typing import Any, Iterator

from pipeline.remote.connection import Connection
from pipeline.remote.transport import RemoteError

log = logging.getLogger("pipeline")
PLAIN_WORD = re.compile(r"[A-Za-z0-9_./+~][A-Za-z0-9_./+~-]*")  # a path a shell takes as one word, no option


def _get(device: Any, key: str, default=None):
    v = device.get(key, default) if hasattr(device, "get") else getattr(device, key, default)
    return default if v is None else v


def shell_word(word: str) -> str:
    """`word` for a POSIX shell command line: as it is when it is a plain path (so that ~ still expands), else
    quoted. (device.remote_python and device.benchmark_model are checked at plan time: pipeline.devices.catalog.)"""
    return word if PLAIN_WORD.fullmatch(word) else shlex.quote(word)


@contextlib.contextmanager
def scratch(t, conn: Connection, name: str) -> Iterator[str]:
    """A fresh folder on the device (mktemp -d), removed on every way out of the block. When it cannot be removed
    (the link is gone) the error says so and how to remove it by hand."""
    base = "\"${TMPDIR:-/tmp}\"" if conn.scheme == "ssh" else "/data/local/tmp"
    mk = t.run(f"mktemp -d {base}/edge-pipeline.XXXXXX", "creating the scratch folder", 60)
    folder = mk.stdout.strip().splitlines()[-1] if mk.returncode == 0 and mk.stdout.strip() else ""
    if not folder.startswith("/"):
        raise RemoteError(f"creating the scratch folder on {name} ({conn}) failed (exit {mk.returncode}): "
                          f"{(mk.stderr or mk.stdout).strip()[-300:]}. Check that mktemp exists there and its temporary "
                          f"folder is writable (df -h /tmp)")
    failed: BaseException | None = None
    try:
        yield folder
    except BaseException as e:  # (a RemoteError, a timeout, a signal): remove the folder, then let it go on
        failed = e
        raise
    finally:
        try:
            t.run(f"rm -rf {shlex.quote(folder)}", "removing the scratch folder", 60)
        except RemoteError as e:
            by_hand = (f"the scratch folder {folder} with the models could not be removed from {name} ({e}); "
                       f"remove it by hand: " + (f"ssh -p {conn.port} {conn.user}@{conn.host} rm -rf {folder}"
                                                 if conn.scheme == "ssh" else
                                                 f"adb -s {conn.serial} shell rm -rf {folder}"))
            if isinstance(failed, RemoteError):
                raise RemoteError(f"{failed}\n{by_hand}") from failed
            if failed is None:
                raise RemoteError(f"{by_hand}. The measurement was not recorded") from e
            log.warning("%s", by_hand)  # an interrupt or another error goes on; the folder is named here
