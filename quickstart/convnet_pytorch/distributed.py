"""Data-parallel training when MPI started several copies of the script, as CNTK's
data_parallel_distributed_learner trained the recipe on several nodes.

Every rank starts from the same seed, so all draw the same global minibatch; each computes the
gradient of its own slice, the ranks sum those gradients (torch.distributed, gloo) and every
rank takes the same optimizer step: the parameters stay identical, and one step means what it
means on one process. Rank 0 alone writes the model files and the closing lines; the others
print their own slice's progress, which mpirun gathers into the job's output beside rank 0's.

The ranks meet through a file in AZ_BATCHAI_SHARED_JOB_TEMP, the folder Batch AI shared between
a job's nodes.
"""

import os
import socket

import torch
import torch.distributed as dist

from .ctf_reader import InputError

RENDEZVOUS_FILE = "convnet_mnist_rendezvous"
# (world size, rank) variables of the MPI implementations Batch AI's images carried.
MPI_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),  # Open MPI
    ("PMI_SIZE", "PMI_RANK"),  # MPICH, Intel MPI
)


class SingleProcess:
    """One process: every sample is ours and nothing needs summing."""

    rank, size = 0, 1

    def shard(self, indices):
        return indices

    def sum_gradients(self, gradients, local_count, count):
        pass

    def sum_totals(self, *values):
        return values

    def ranks_on_this_host(self):
        return 1

    def close(self):
        pass


class DataParallel(SingleProcess):
    """``size`` ranks of one MPI launch, joined in a gloo process group."""

    def __init__(self, rank, size, rendezvous_dir):
        self.rank, self.size = rank, size
        init = f"file://{os.path.join(rendezvous_dir, RENDEZVOUS_FILE)}"
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)

    def shard(self, indices):
        """This rank's part of a global minibatch: every size-th sample from its rank on."""
        return indices[self.rank :: self.size]

    def sum_gradients(self, gradients, local_count, count):
        """Turn this rank's mean gradient into the mean over the global minibatch (in place)."""
        gradients.mul_(local_count / count)
        dist.all_reduce(gradients)

    def sum_totals(self, *values):
        """The sums over all ranks of a few numbers (epoch loss, errors, samples)."""
        total = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(total)
        return tuple(total.tolist())

    def ranks_on_this_host(self):
        """How many ranks share this machine (the local cloud's nodes all do)."""
        hosts = [None] * self.size
        dist.all_gather_object(hosts, socket.gethostname())
        return hosts.count(socket.gethostname())

    def close(self):
        dist.destroy_process_group()


def from_environment(environ=os.environ):
    """DataParallel when MPI started more than one rank, else SingleProcess."""
    for size_name, rank_name in MPI_VARIABLES:
        if environ.get(size_name, "1").isdigit() and int(environ.get(size_name, "1")) > 1:
            folder = environ.get("AZ_BATCHAI_SHARED_JOB_TEMP")
            if not folder or not os.path.isdir(folder):
                raise InputError(
                    f"{environ[size_name]} MPI ranks need a folder they all share for their "
                    "rendezvous: set AZ_BATCHAI_SHARED_JOB_TEMP (Batch AI sets it)"
                )
            return DataParallel(int(environ[rank_name]), int(environ[size_name]), folder)
    return SingleProcess()
