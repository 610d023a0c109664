"""How the CPU step shares the machine: OpenMP's idle threads, the thread count, freed memory.

No torch import here on purpose: let_idle_threads_sleep must run before torch loads its OpenMP
runtime, and the package's __init__ calls it first. The figures behind each choice are in
tests/bench/README.md ("CPU threads and memory").
"""

import ctypes
import os


def let_idle_threads_sleep():
    """Let idle OpenMP worker threads spin only briefly before they sleep (unless set).

    A thread that spins long holds a core while it waits for its partner at the end of every
    parallel operation; when other processes share the cores (the local cloud's node is this
    machine) the partner then cannot run, and libgomp's default spin made a step several times
    slower under load. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs a wake-up per operation
    and slows an idle machine. A short spin is the best of both in same-run measurements.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "30000")


def cpu_thread_count(environ):
    """Threads to train with on a CPU: OMP_NUM_THREADS when it is a positive number, else
    every core this process may run on.

    OMP_NUM_THREADS is the usual way to leave cores to other work, and here it matters: the
    threads meet at the end of every operation, so beside one busy program on two cores, one
    thread beats two.
    """
    requested = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return cores or os.cpu_count() or 1


def keep_freed_memory():
    """Keep freed buffers in the heap instead of returning them to the OS.

    Every training step allocates the same few megabyte-sized activations; glibc otherwise
    hands them back and the next step page-faults them in again, which costs more than the
    convolutions. Linux/glibc only; elsewhere this is a no-op.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass
