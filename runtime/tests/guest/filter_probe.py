"""Calls that the guest's seccomp filter must refuse, made from inside with
raw syscall(2) (x86_64 numbers). Prints one line per call:
  <name>: ok            (the call succeeded)
  <name>: <ERRNO NAME>  (it failed)
The arguments are chosen to be harmless when run natively (as root, where
most of these succeed or fail for other reasons); only the sandbox's answers
are asserted. `--sandbox` adds PTRACE_TRACEME, which is unsafe natively.
"""

import ctypes
import errno
import os
import signal
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

NR = {
    "clone": 56,
    "ptrace": 101,
    "pivot_root": 155,
    "mount": 165,
    "umount2": 166,
    "init_module": 175,
    "kexec_load": 246,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "seccomp": 317,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "fsopen": 430,
    "clone3": 435,
    "pidfd_getfd": 438,
}
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
SIGCHLD = 17
PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_DETACH = 0, 16, 17


def result(name, rc, err):
    if rc >= 0:
        print(f"{name}: ok", flush=True)
    else:
        print(f"{name}: {errno.errorcode.get(err, err)}", flush=True)


def sys_call(name, nr, *args, forks=False):
    ctypes.set_errno(0)
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    rc = libc.syscall(ctypes.c_long(nr), *args)
    err = ctypes.get_errno()
    if forks and rc == 0:
        os._exit(0)  # the child of a clone that (natively) succeeded
    result(name, rc, err)
    if forks and rc > 0:
        os.waitpid(rc, 0)
    return rc


def sock(name, family, type_, proto):
    ctypes.set_errno(0)
    rc = libc.socket(family, type_, proto)
    result(name, rc, ctypes.get_errno())
    if rc >= 0:
        os.close(rc)


def main():
    sandbox = "--sandbox" in sys.argv
    sock("socket(AF_PACKET, SOCK_RAW)", 17, 3, 0x0300)
    sock("socket(AF_PACKET, SOCK_DGRAM)", 17, 2, 0x0300)
    sock("socket(AF_INET, SOCK_RAW, ICMP)", 2, 3, 1)
    sock("socket(AF_INET, SOCK_RAW, TCP)", 2, 3, 6)
    sock("socket(AF_INET6, SOCK_RAW, ICMPV6)", 10, 3, 58)
    sock("socket(AF_NETLINK, NETLINK_AUDIT)", 16, 3, 9)
    sock("socket(AF_VSOCK)", 40, 1, 0)

    params = ctypes.create_string_buffer(120)
    rc = sys_call("io_uring_setup", NR["io_uring_setup"], 4, params)
    if rc >= 0:
        os.close(rc)
    sys_call("io_uring_enter", NR["io_uring_enter"], 9999, 0, 0, 0, 0, 0)
    sys_call("io_uring_register", NR["io_uring_register"], 9999, 0, 0, 0)

    # ptrace: attach to our own child (harmless natively), then detach.
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    rc = sys_call("ptrace(PTRACE_ATTACH)", NR["ptrace"], PTRACE_ATTACH, child, 0, 0)
    if rc == 0:
        os.waitpid(child, 0)
        libc.syscall(ctypes.c_long(NR["ptrace"]), ctypes.c_long(PTRACE_DETACH),
                     ctypes.c_long(child), ctypes.c_long(0), ctypes.c_long(0))
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)

    attr = ctypes.create_string_buffer(128)
    sys_call("bpf(BPF_MAP_CREATE)", NR["bpf"], 0, attr, 128)
    sys_call("bpf(BPF_PROG_LOAD)", NR["bpf"], 5, attr, 128)
    sys_call("perf_event_open", NR["perf_event_open"], attr, 0, -1, -1, 0)
    sys_call("userfaultfd", NR["userfaultfd"], 0)
    sys_call("mount(tmpfs)", NR["mount"], b"none", b"/nonexistent-smolvisor-dir", b"tmpfs", 0, 0)
    sys_call("umount2", NR["umount2"], b"/nonexistent-smolvisor-dir", 0)
    sys_call("pivot_root", NR["pivot_root"], b"/nonexistent-a", b"/nonexistent-b")
    sys_call("fsopen", NR["fsopen"], b"nonexistentfs", 0)
    sys_call("setns", NR["setns"], -1, CLONE_NEWNET)
    sys_call("init_module", NR["init_module"], 0, 0, b"")
    sys_call("kexec_load", NR["kexec_load"], 0, 0, 0, 0)
    sys_call("keyctl", NR["keyctl"], 0, 0, 0, 0, 0)
    sys_call("open_by_handle_at", NR["open_by_handle_at"], -1, 0, 0)

    # process_vm_readv of our own memory: succeeds natively.
    src = ctypes.create_string_buffer(b"secret", 16)
    dst = ctypes.create_string_buffer(16)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    local = Iovec(ctypes.cast(dst, ctypes.c_void_p), 16)
    remote = Iovec(ctypes.cast(src, ctypes.c_void_p), 16)
    sys_call("process_vm_readv", NR["process_vm_readv"], os.getpid(),
             ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    sys_call("process_vm_writev", NR["process_vm_writev"], os.getpid(),
             ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    sys_call("pidfd_getfd", NR["pidfd_getfd"], -1, 0, 0)

    # A second seccomp listener: NULL program, so natively EFAULT.
    sys_call("seccomp(NEW_LISTENER)", NR["seccomp"], 1, 8, 0)
    sys_call("clone3", NR["clone3"], 0, 0)

    # clone with a new network namespace: the child (natively) exits at once.
    sys_call("clone(CLONE_NEWNET)", NR["clone"], CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0, forks=True)
    sys_call("clone(CLONE_NEWUSER)", NR["clone"], CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0, forks=True)

    # Last, since natively they change this process.
    sys_call("unshare(CLONE_NEWNS)", NR["unshare"], CLONE_NEWNS)
    sys_call("unshare(CLONE_NEWNET)", NR["unshare"], CLONE_NEWNET)
    if sandbox:
        sys_call("ptrace(PTRACE_TRACEME)", NR["ptrace"], PTRACE_TRACEME, 0, 0, 0)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
