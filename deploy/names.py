"""Checks of the names that reach ssh, rsync and paths on the target.

A host name starting with ``-`` would be read by ssh as an option (``-oProxyCommand=...``
runs a command on the workstation), and a release name with ``/`` or ``..`` would put
the release, or remove a directory, outside ``/opt/crystal-psd/releases``. Each check
returns the accepted value or raises :class:`BadName` with one line naming the
option.
"""

from __future__ import annotations

import ipaddress
import re

#: A DNS label or an ssh_config alias: letters, digits, '_' and inner '-'.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
#: A POSIX-ish login name (what useradd accepts), never starting with '-'.
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
#: Release names: the default is <version>-<UTC timestamp>.
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


class BadName(ValueError):
    """A host, user or release name that must not reach ssh, rsync or a path."""


def check_user(user: str, option: str = "--ssh-user") -> str:
    """A login name: letters, digits, ``_ . -``, not starting with ``-`` or a digit."""
    if not _USER.fullmatch(user):
        raise BadName(f"{option} {user!r}: not a user name (letters, digits, _ . -; "
                         "starting with a letter or _)")
    return user


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def check_host(text: str, option: str = "--hosts") -> tuple[str | None, str]:
    """Split and check ``[user@]host``; returns ``(user or None, host)``.

    ``host`` is a host name (or ssh_config alias), an IPv4 address or an IPv6 address,
    bare or in brackets (``[fe80::1]``); returned without brackets.
    """
    user, sep, host = text.rpartition("@")
    if sep:
        check_user(user, f"{option} {text!r}: user")
    else:
        user = None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare and ":" in bare:
        if _ip(bare.split("%", 1)[0]) is None or not re.fullmatch(r"[0-9A-Fa-f:.%\w]+", bare):
            raise BadName(f"{option} {text!r}: not an IPv6 address")
        return user, bare
    if bare != host or not _HOSTNAME.fullmatch(host) or len(host) > 253:
        raise BadName(f"{option} {text!r}: not a host name or IP address (letters, "
                         "digits, '.', '_', inner '-'; [user@]host)")
    return user, host


def check_release_name(name: str, option: str = "--release-name") -> str:
    """A release directory name: letters, digits, ``. _ + -``; no ``/``, no ``..``, no
    leading ``-`` or ``.``; at most 100 characters."""
    if not _RELEASE.fullmatch(name) or ".." in name:
        raise BadName(f"{option} {name!r}: not a release name (letters, digits, . _ + -; "
                         "no '/', no '..', not starting with '-' or '.')")
    return name
