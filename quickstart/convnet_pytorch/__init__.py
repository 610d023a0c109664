"""The PyTorch port of ConvNet_MNIST.py, for where CNTK cannot be installed.

The job's node has only what was uploaded, so the tutorial uploads this folder beside
ConvNet_MNIST.py. One module per job: network.py (the recipe's network), train.py (the training
run), ctf_reader.py and cntk_compat.py (what CNTK did: its text format, momentum SGD, schedules
and sample order), and the CPU speed work: fast_cpu.py (the step), conv1_kernels.py with
conv1_pool.c (compiled kernels) and cpu_tuning.py (threads and memory).
"""

from .cpu_tuning import let_idle_threads_sleep

let_idle_threads_sleep()  # before train.py's import loads torch and its OpenMP runtime

from .ctf_reader import InputError  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["InputError", "train"]
