"""fsck.nvfs: check and repair an NVFS filesystem, with the fsck(8) conventions.

``fsck.nvfs [-n | -p | -y] [-f] [-b] [-C FD] [-v] [--json] [--badblocks FILE] DEVICE``

``--badblocks FILE`` lists bad media ranges (``SECTOR COUNT`` lines as in sysfs,
or ``START-END`` inclusive bytes; see nvfs_tools.badblocks); they join the
kernel's list for pmem/dax devices.  fsck never reads or writes them and names
the files or metadata each one hits.

Exit codes (summed): 0 clean, 1 errors corrected, 4 errors left uncorrected,
8 operational error, 16 usage error, 32 cancelled by the user.

This module is only the command line: options, prompting policy and exit
codes.  The checker itself is :mod:`nvfs_tools.check`.  Imports stay lazy so
``fsck.nvfs --version`` starts fast.
"""

from __future__ import annotations

import os
import sys

PROG = "fsck.nvfs"
USAGE = f"usage: {PROG} [-n | -p | -y] [-f] [-b] [-C FD] [-v] [--json] [--badblocks FILE] DEVICE"
EXIT_OPERATIONAL = 8
EXIT_USAGE = 16


class _Usage(Exception):
    pass


def parse_args(argv: list[str]) -> dict:
    """fsck-style option parsing (grouped short flags, ``-C FD`` / ``-CFD``)."""
    opts: dict = {"modes": [], "force": False, "backup": False, "fd": None, "verbose": False, "json": False}
    opts["badblocks"] = None
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if arg.startswith("--"):
            if arg == "--json":
                opts["json"] = True
            elif arg == "--badblocks" or arg.startswith("--badblocks="):
                value = arg.partition("=")[2] if "=" in arg else None
                if value is None:
                    if i >= len(argv):
                        raise _Usage("--badblocks needs a FILE")
                    value = argv[i]
                    i += 1
                if not value:
                    raise _Usage("--badblocks needs a FILE")
                opts["badblocks"] = value
            elif arg == "--version":
                opts["version"] = True
            elif arg == "--help":
                opts["help"] = True
            else:
                raise _Usage(f"unknown option {arg}")
            continue
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        flags = arg[1:]
        while flags:
            flag, flags = flags[0], flags[1:]
            if flag in "npya":
                opts["modes"].append("p" if flag == "a" else flag)
            elif flag == "f":
                opts["force"] = True
            elif flag == "b":
                opts["backup"] = True
            elif flag == "v":
                opts["verbose"] = True
            elif flag == "V":
                opts["version"] = True
            elif flag == "h":
                opts["help"] = True
            elif flag == "C":
                value = flags
                flags = ""
                if not value:
                    if i >= len(argv):
                        raise _Usage("-C needs a file descriptor")
                    value = argv[i]
                    i += 1
                try:
                    opts["fd"] = int(value)
                except ValueError:
                    raise _Usage(f"-C: bad file descriptor '{value}'") from None
                if opts["fd"] < 0:
                    raise _Usage(f"-C: bad file descriptor '{value}'")
            else:
                raise _Usage(f"unknown option -{flag}")
    if opts.get("version") or opts.get("help"):
        return opts
    if len(set(opts["modes"])) > 1:
        raise _Usage("only one of the options -n, -p/-a and -y may be given")
    if len(positional) != 1:
        raise _Usage("exactly one DEVICE is needed" if not positional else "only one DEVICE may be given")
    opts["device"] = positional[0]
    return opts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
    except _Usage as exc:
        print(f"{PROG}: {exc}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    if opts.get("version"):
        from nvfs_tools import __version__

        print(f"{PROG} (nvfs-tools) {__version__}")
        return 0
    if opts.get("help"):
        print(USAGE)
        print(__doc__.split("\n\n")[2] if __doc__ else "")
        return 0
    mode = opts["modes"][0] if opts["modes"] else "ask"
    if mode == "ask" and not sys.stdin.isatty():
        print(
            f"{PROG}: stdin is not a terminal, so questions cannot be asked: use -n, -p or -y\n{USAGE}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return _check(opts, mode)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 32
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OPERATIONAL
    except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback
        if os.environ.get("NVFS_DEBUG") == "1":
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (NVFS_DEBUG=1 shows a traceback)", file=sys.stderr)
        return EXIT_OPERATIONAL | 4


def _check(opts: dict, mode: str) -> int:
    from nvfs_tools.check.checker import Options
    from nvfs_tools.check.runner import check

    fd = opts["fd"]
    ranges: tuple = ()
    if opts["badblocks"] is not None:
        from nvfs_tools import badblocks

        try:
            ranges = tuple(badblocks.load(opts["badblocks"]))
        except badblocks.BadBlocksError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_OPERATIONAL
    options = Options(
        badblocks=ranges,
        mode=mode,
        force=opts["force"],
        use_backup=opts["backup"],
        progress_fd=fd if fd not in (None, 0) else None,
        verbose=opts["verbose"],
        json=opts["json"],
        tty_progress=(fd == 0 or sys.stderr.isatty()) and not opts["json"],
    )
    report = check(opts["device"], options)
    if report.error:
        print(f"{PROG}: {report.error}", file=sys.stderr)
    if opts["json"]:
        print(report.to_json())
    return report.exit_code()


def console_main() -> None:
    """Console-script entry point: :func:`main` without the interpreter's finalization (cli.exit_fast)."""
    from nvfs_tools.cli import exit_fast

    exit_fast(main)


if __name__ == "__main__":  # pragma: no cover
    console_main()
