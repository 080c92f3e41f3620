"""Changes files through the Gofer and tries to get out of the sandbox's
root; prints "ok NAME" for each check that holds and "FAIL NAME: why" for
each that does not. Sections are chosen by argv[2:]; argv[1] is the scratch
directory (the host's, seen through the sandbox's copy-on-write tree),
argv[2] a host directory the race aims at.

Run by tests/gofer.rs, which also checks on the host that nothing changed.
"""

import errno
import os
import stat
import sys
import threading
import time

D = sys.argv[1]
os.chdir(D)


def ok(name):
    print("ok", name, flush=True)


def fail(name, why):
    print("FAIL", name + ":", why, flush=True)


def expect_errno(name, want, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except OSError as e:
        if e.errno == want:
            ok(name)
        else:
            fail(name, "%s, not %s" % (errno.errorcode.get(e.errno), errno.errorcode[want]))
        return
    fail(name, "succeeded, not %s" % errno.errorcode[want])


def check(name, cond, why=""):
    if cond:
        ok(name)
    else:
        fail(name, why)


def basics():
    with open("new.txt", "w") as f:
        f.write("hello\n")
    check("create", open("new.txt").read() == "hello\n")
    with open("existing.txt", "a") as f:
        f.write("more\n")
    check("append", open("existing.txt").read() == "original\nmore\n")
    os.mkdir("dir", 0o750)
    check("mkdir", stat.S_IMODE(os.stat("dir").st_mode) == 0o750 & ~0o022)
    os.rename("new.txt", "dir/moved.txt")
    check("rename", os.path.exists("dir/moved.txt") and not os.path.exists("new.txt"))
    os.symlink("moved.txt", "dir/link")
    check("symlink", os.readlink("dir/link") == "moved.txt" and open("dir/link").read() == "hello\n")
    os.link("dir/moved.txt", "hard")
    check("link", os.stat("hard").st_nlink == 2)
    os.chmod("hard", 0o600)
    check("chmod", stat.S_IMODE(os.stat("dir/moved.txt").st_mode) == 0o600)
    os.chown("hard", 1234, 5678)
    st = os.stat("hard")
    check("chown", (st.st_uid, st.st_gid) == (1234, 5678))
    os.truncate("hard", 2)
    check("truncate", open("hard").read() == "he")
    os.utime("hard", (1000000000, 1000000000))
    check("utime", os.stat("hard").st_mtime == 1000000000)
    os.mkfifo("fifo")
    check("mkfifo", stat.S_ISFIFO(os.lstat("fifo").st_mode))
    os.setxattr("hard", b"user.k", b"v")
    check("setxattr", os.getxattr("hard", b"user.k") == b"v")
    os.unlink("hard")
    os.unlink("dir/link")
    os.unlink("dir/moved.txt")
    os.rmdir("dir")
    check("unlink and rmdir", not os.path.exists("dir"))
    os.unlink("existing.txt")
    check("unlink a host file", not os.path.exists("existing.txt"))
    old = os.umask(0o077)
    os.mkdir("private")
    os.umask(old)
    check("umask", stat.S_IMODE(os.stat("private").st_mode) == 0o700)
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    os.mkdir("sub", dir_fd=fd)
    with open(os.open("sub/f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "w") as f:
        f.write("x")
    os.rename("sub/f", "sub/g", src_dir_fd=fd, dst_dir_fd=fd)
    check("dirfd", os.path.exists(D + "/sub/g"))
    os.close(fd)
    check("access W_OK", os.access("sub/g", os.W_OK))
    fd = os.open("sub/g", os.O_RDONLY)
    os.fchmod(fd, 0o640)
    check("fchmod on a read-only descriptor", stat.S_IMODE(os.stat("sub/g").st_mode) == 0o640)
    os.close(fd)


def errnos():
    open("file", "w").close()
    os.mkdir("full")
    open("full/x", "w").close()
    expect_errno("mkdir existing: EEXIST", errno.EEXIST, os.mkdir, "full")
    expect_errno("O_EXCL existing: EEXIST", errno.EEXIST, os.open, "file", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno("missing parent: ENOENT", errno.ENOENT, os.open, "nope/x", os.O_CREAT | os.O_WRONLY)
    expect_errno("unlink missing: ENOENT", errno.ENOENT, os.unlink, "nope")
    expect_errno("file as directory: ENOTDIR", errno.ENOTDIR, os.open, "file/x", os.O_CREAT | os.O_WRONLY)
    expect_errno("rmdir non-empty: ENOTEMPTY", errno.ENOTEMPTY, os.rmdir, "full")
    expect_errno("unlink a directory: EISDIR", errno.EISDIR, os.unlink, "full")
    expect_errno("open a directory for writing: EISDIR", errno.EISDIR, os.open, "full", os.O_WRONLY)
    expect_errno("rename into itself: EINVAL", errno.EINVAL, os.rename, "full", "full/inner")
    expect_errno("hard link to a directory: EPERM", errno.EPERM, os.link, "full", "dirlink")
    expect_errno("rename across mounts: EXDEV", errno.EXDEV, os.rename, "file", "/dev/shm/file")
    expect_errno("device node: EPERM", errno.EPERM, os.mknod, "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.symlink("loop", "loop")
    expect_errno("symlink loop: ELOOP", errno.ELOOP, os.open, "loop", os.O_WRONLY)
    expect_errno("O_NOFOLLOW on a symlink: ELOOP", errno.ELOOP, os.open, "loop", os.O_WRONLY | os.O_NOFOLLOW)


def escapes():
    # A symlink to /etc/passwd: the write lands in the sandbox's copy.
    os.symlink("/etc/passwd", "passwd")
    with open("passwd", "a") as f:
        f.write("intruder:x:0:0::/:/bin/sh\n")
    check("symlink to /etc/passwd writes the sandbox's copy", "intruder" in open("/etc/passwd").read())
    # `..` past the root stays at the root.
    name = "smolvisor-dotdot-%d" % os.getpid()
    fd = os.open("../" * 64 + "etc/" + name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    check("dotdot chain stays inside", os.path.exists("/etc/" + name))
    os.symlink("../" * 64 + "etc/" + name + ".link", "dotdot-link")
    open("dotdot-link", "w").close()
    check("dotdot symlink stays inside", os.path.exists("/etc/" + name + ".link"))
    # Magic links: the guest's kernel answers them on its read-only view.
    expect_errno("/proc/self/root: EROFS", errno.EROFS, os.open, "/proc/self/root/etc/passwd", os.O_WRONLY)
    expect_errno("/proc/self/cwd: EROFS", errno.EROFS, os.open, "/proc/self/cwd/magic", os.O_CREAT | os.O_WRONLY)
    # Reopening one's own descriptor through /proc/self/fd is a reopen of
    # the sandbox's copy, as on Linux.
    rfd = os.open("existing.txt", os.O_RDONLY)
    wfd = os.open("/proc/self/fd/%d" % rfd, os.O_WRONLY | os.O_APPEND)
    os.write(wfd, b"reopened\n")
    os.close(wfd)
    check("/proc/self/fd reopens the sandbox's copy", open("existing.txt").read() == "original\nreopened\n")
    os.symlink("/proc/self/root/etc/passwd", "magic")
    expect_errno("symlink to a magic link: EROFS", errno.EROFS, os.open, "magic", os.O_WRONLY)
    expect_errno("mkdir through /proc/self/root: EROFS", errno.EROFS, os.mkdir, "/proc/self/root/tmp/magic")
    # The read-only view holds.
    expect_errno("write to a read-only descriptor: EBADF", errno.EBADF, os.write, rfd, b"x")
    os.close(rfd)
    mounts = [l.split() for l in open("/proc/self/mountinfo")]
    root = [m for m in mounts if m[4] == "/"]
    check("root mount is read-only", root and root[-1][5].split(",")[0] == "ro", str(root))


def race():
    # One thread swaps a directory and a symlink to the host's `outside`
    # directory under the same name; another creates files inside it.
    outside = sys.argv[2]
    os.mkdir("real")
    stop = time.monotonic() + 2
    def swapper():
        while time.monotonic() < stop:
            try:
                os.rename("real", "tmpname")
                os.symlink(outside, "real")
                os.unlink("real")
                os.rename("tmpname", "real")
            except OSError:
                pass
    t = threading.Thread(target=swapper)
    t.start()
    n = 0
    while time.monotonic() < stop:
        try:
            fd = os.open("real/f%d" % n, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
            os.rename("real/f%d" % n, "real/g%d" % n)
        except OSError:
            pass
        n += 1
    t.join()
    print("race: %d rounds" % n, flush=True)
    ok("race")


def unix_socket():
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind("sock")
    s.listen()
    c = socket.socket(socket.AF_UNIX)
    c.connect("sock")
    a, _ = s.accept()
    c.sendall(b"ping")
    check("AF_UNIX bind to a path", stat.S_ISSOCK(os.stat("sock").st_mode) and a.recv(4) == b"ping")


for section in sys.argv[3:]:
    globals()[section]()
print("done", flush=True)
