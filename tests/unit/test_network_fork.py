"""The network modules' locks after a fork: a child forked while another
thread of the parent held one must not wait on it for ever (that thread
does not exist in the child)."""

from __future__ import annotations

import os
import threading

import pytest

from sandbox.network import links, nft


def _held_at_fork(get_lock) -> int:  # type: ignore[no-untyped-def]
    """Fork while a thread holds the lock; the child's exit status: 0 if it
    could take the lock (within 5 s), 1 if not."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with get_lock():
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(30)
    try:
        pid = os.fork()
        if pid == 0:
            ok = get_lock().acquire(timeout=5)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        t.join()
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(
    "get_lock",
    [lambda: links._pool_lock, lambda: nft._lib_lock, lambda: nft._run_lock],
    ids=["links._pool_lock", "nft._lib_lock", "nft._run_lock"],
)
def test_a_lock_held_at_a_fork_is_free_in_the_child(get_lock) -> None:  # type: ignore[no-untyped-def]
    assert _held_at_fork(get_lock) == 0
