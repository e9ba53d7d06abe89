#!/usr/bin/python3
"""Run a command under an approximation of stenod.service's seccomp sandbox, without systemd.

A development aid for machines where systemd is not PID 1 (containers, CI). It reads the
unit's ``SystemCallFilter=``, ``RestrictAddressFamilies=`` and ``MemoryDenyWriteExecute=``,
installs them as one seccomp filter that fails refused calls with EPERM (as
``SystemCallErrorNumber=EPERM`` does), then execs the command. A refused call therefore
shows up as a PermissionError in the command's own output. Child processes (the Whisper
workers) inherit the filter. Not covered: mount and user namespaces (ProtectSystem=,
PrivateTmp=, PrivateUsers=, …), capabilities, RestrictNamespaces=, LockPersonality=.

Needs Debian's python3-seccomp and systemd-analyze (for the syscall group definitions):

    /usr/bin/python3 systemd/sandbox-exec.py [--unit FILE] -- /opt/stenod/bin/stenod run
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import mmap
import os
import socket
import subprocess
import sys
from pathlib import Path

import seccomp  # Debian: python3-seccomp

SHM_EXEC = 0o100000
DEFAULT_UNIT = Path(__file__).resolve().with_name("stenod.service")


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Each ``Key=value`` of the [Service] section, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """The syscall groups as this machine's systemd defines them."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        name = line.strip()
        if line.startswith("@"):
            current = groups.setdefault(name, [])
        elif current is not None and name and not name.startswith("#"):
            current.append(name)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    result: set[str] = set()
    for name in names:
        result |= expand(groups[name], groups) if name.startswith("@") else {name}
    return result


def allowed_syscalls(filters: list[str], groups: dict[str, list[str]]) -> set[str]:
    """systemd's reading: the first line is an allow-list; later ``~`` lines remove from it."""
    if not filters or filters[0].startswith("~"):
        raise SystemExit("sandbox-exec: the unit's SystemCallFilter= must start with an allow-list")
    allowed: set[str] = set()
    for entry in filters:
        deny = entry.startswith("~")
        names = expand(entry.removeprefix("~").split(), groups)
        allowed = allowed - names if deny else allowed | names
    return allowed


def build_filter(unit: Path) -> seccomp.SyscallFilter:
    settings = unit_settings(unit)
    allowed = allowed_syscalls(settings.get("SystemCallFilter", []), syscall_groups())
    families = [getattr(socket, name) for v in settings.get("RestrictAddressFamilies", []) for name in v.split()]
    mdwe = settings.get("MemoryDenyWriteExecute", ["no"])[-1] in ("yes", "true", "1")
    conditional = ({"socket"} if families else set()) | (
        {"mmap", "mprotect", "pkey_mprotect", "shmat"} if mdwe else set()
    )
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sorted(allowed - conditional):
        with contextlib.suppress(RuntimeError, ValueError):  # not a system call on this architecture
            f.add_rule(seccomp.ALLOW, name)
    for family in families:
        f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, family))
    if mdwe:  # no W+X mappings, and no making memory executable afterwards
        f.add_rule(seccomp.ALLOW, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, 0))
        f.add_rule(seccomp.ALLOW, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_WRITE, 0))
        for call in ("mprotect", "pkey_mprotect"):
            f.add_rule(seccomp.ALLOW, call, seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, 0))
        f.add_rule(seccomp.ALLOW, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, 0))
    return f


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=Path, default=DEFAULT_UNIT, help="unit file to read (default: %(default)s)")
    parser.add_argument("command", nargs="+", help="the command to exec inside the filter")
    args = parser.parse_args(argv)
    build_filter(args.unit).load()  # also sets no_new_privs, as NoNewPrivileges=yes does
    os.execvp(args.command[0], args.command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
