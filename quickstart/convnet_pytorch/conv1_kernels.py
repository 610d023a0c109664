"""Building and loading conv1_pool.c: conv1, its max-pool, bias and ReLU as compiled C kernels.

The PyTorch operators for this part write and read back several megabytes a step (the
tap-major im2col columns, conv1's 27x27 outputs, 64-bit pooling indices, the gradient scattered
back onto 27x27) and were the most memory-bound part of the step; done one image at a time in
the core's cache it takes well under half of that. The forward values are the same as the
operators' (the taps are summed in the same order); conv1's kernel and bias gradients are summed
in another order, so their last bits differ.

Built at start-up with the C compiler (``CC``, else ``cc``; well under a second) into a private
temporary folder that is removed once loaded. It needs Linux on x86-64 with AVX2 and FMA, and
PyTorch on GNU OpenMP: the kernels join PyTorch's own OpenMP threads (the same libgomp), so they
never compete with them. Anything missing raises KernelsUnavailable, and the CPU step then uses
the PyTorch operators.
"""

import ctypes
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import torch

from .network import INPUT_SCALE

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv1_pool.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu99"]
INPUT_DIM = 28 * 28


class KernelsUnavailable(Exception):
    """The compiled conv1 kernels cannot run here (the message says why)."""


def load_conv1_kernels():
    """The compiled kernels where they build, else None; and the line that says which conv1 the
    CPU step runs, and why not the kernels."""
    try:
        return Conv1PoolKernels.build(), "conv1 and its max-pool run as compiled C kernels (AVX2)."
    except KernelsUnavailable as reason:
        return None, (
            "conv1 and its max-pool run as PyTorch operators: the compiled kernels are "
            f"unavailable ({reason})."
        )


class Conv1PoolKernels:
    """conv1_pool.c's forward and backward, called through ctypes on torch tensors."""

    def __init__(self, library):
        self._library = library
        pointer, count, scale = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        library.conv1_pool_forward.argtypes = [
            *(pointer, pointer, pointer, scale, count, pointer, pointer)
        ]
        library.conv1_pool_backward.argtypes = [
            *(pointer, pointer, pointer, pointer, scale, count, pointer, pointer)
        ]

    @classmethod
    def build(cls):
        if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
            raise KernelsUnavailable("they need Linux on x86-64")
        if not torch.backends.openmp.is_available():
            raise KernelsUnavailable("this PyTorch does not use OpenMP")
        openmp_before = loaded_openmp_runtimes()
        folder = None
        try:
            folder = tempfile.mkdtemp(prefix="ConvNet_MNIST-")
            library = ctypes.CDLL(compile_kernels(folder))
        except OSError as error:
            where = folder or tempfile.gettempdir()
            raise KernelsUnavailable(
                f"cannot build or load them in {where} ({error.strerror or error})"
            ) from None
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        if not library.conv1_kernels_supported():
            raise KernelsUnavailable("this CPU lacks AVX2 or FMA")
        if loaded_openmp_runtimes() - openmp_before:
            raise KernelsUnavailable("they would bring a second OpenMP runtime beside PyTorch's")
        return cls(library)

    def forward(self, pixels, weight, bias):
        """ReLU(max-pool(conv1(pixels / 256)) + bias) as [n, 32, 13, 13] channels-last, and
        a function from the gradient there to conv1's kernel and bias gradients."""
        n = pixels.shape[0]
        pixels = pixels.reshape(n, INPUT_DIM).contiguous()
        kernels = weight.detach().reshape(32, 25).t().contiguous()
        bias = bias.detach().contiguous()
        relu = torch.empty(n, 13, 13, 32)
        argmax = torch.empty(n, 13, 13, 32, dtype=torch.uint8)
        self._library.conv1_pool_forward(
            pixels.data_ptr(), kernels.data_ptr(), bias.data_ptr(), INPUT_SCALE, n,
            relu.data_ptr(), argmax.data_ptr(),
        )  # fmt: skip
        return relu.permute(0, 3, 1, 2), lambda grad: self._backward(grad, pixels, relu, argmax)

    def _backward(self, grad, pixels, relu, argmax):
        n = pixels.shape[0]
        grad = grad.permute(0, 2, 3, 1).contiguous()  # a view when already channels-last
        threads = self._library.conv1_kernels_threads()
        kernel_grad = torch.zeros(threads, 25, 32)
        bias_grad = torch.zeros(threads, 32)
        self._library.conv1_pool_backward(
            pixels.data_ptr(), grad.data_ptr(), relu.data_ptr(), argmax.data_ptr(),
            INPUT_SCALE, n, kernel_grad.data_ptr(), bias_grad.data_ptr(),
        )  # fmt: skip
        return kernel_grad.sum(0).t().reshape(32, 1, 5, 5), bias_grad.sum(0)


def compile_kernels(folder):
    """Compile conv1_pool.c into ``folder`` with ``$CC`` (else ``cc``); the library's path."""
    compiler = os.environ.get("CC", "cc")
    library = os.path.join(folder, "conv1_pool.so")
    try:
        build = subprocess.Popen(
            [compiler, *FLAGS, "-o", library, SOURCE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as error:
        raise KernelsUnavailable(
            f"no C compiler {compiler!r} ({error.strerror or error})"
        ) from None
    try:
        _, errors = build.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        build.kill()
        build.communicate()
        raise KernelsUnavailable(f"{compiler} took over 120 s") from None
    if build.returncode != 0:
        lines = errors.strip().splitlines() or [f"exit status {build.returncode}"]
        first_error = next((line for line in lines if "error" in line), lines[0])
        raise KernelsUnavailable(f"{compiler} failed: {first_error.strip()[:200]}")
    return library


def loaded_openmp_runtimes():
    """The files of the OpenMP runtimes mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return set()
    return {
        os.path.realpath(path)
        for path in paths
        if os.path.basename(path).startswith(("libgomp", "libomp", "libiomp"))
    }
