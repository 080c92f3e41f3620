"""CVE-2019-5736's way in: the runtime's own binary seen through /proc.
Tries to open the executable of every process it can see (the sandbox's
init is a copy of the runtime) for writing: directly, through /proc/PID/exe
and through an O_PATH descriptor reopened by /proc/self/fd/N, with
O_TRUNC too. Prints "PATH: refused ERRNO" or "PATH: OPENED" for each
way, then "done"."""

import errno
import os

targets = ["/proc/1/exe", "/proc/self/exe"]
for pid in sorted(os.listdir("/proc")):
    if pid.isdigit() and f"/proc/{pid}/exe" not in targets:
        targets.append(f"/proc/{pid}/exe")
for target in targets:
    for name, flags in [("wronly", os.O_WRONLY), ("rdwr|trunc", os.O_RDWR | os.O_TRUNC)]:
        try:
            fd = os.open(target, flags)
            print(f"{target} {name}: OPENED", flush=True)
            os.close(fd)
        except OSError as e:
            print(f"{target} {name}: refused {errno.errorcode.get(e.errno, e.errno)}")
        try:
            path = os.open(target, os.O_PATH)
        except OSError as e:
            print(f"{target} o_path: refused {errno.errorcode.get(e.errno, e.errno)}")
            continue
        try:
            fd = os.open(f"/proc/self/fd/{path}", flags)
            print(f"{target} reopen {name}: OPENED", flush=True)
            os.close(fd)
        except OSError as e:
            print(f"{target} reopen {name}: refused {errno.errorcode.get(e.errno, e.errno)}")
        os.close(path)
print("done")
