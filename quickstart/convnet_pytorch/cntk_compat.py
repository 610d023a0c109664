"""What CNTK did for the recipe that PyTorch does differently: its schedules, its momentum SGD
and the order its randomizing reader delivers samples in (training.md, part 1)."""

import math

import torch


def schedule_value(schedule, epoch):
    """The value of an epoch-indexed CNTK schedule list for 0-based ``epoch``: each entry lasts
    one epoch and the last one persists."""
    return schedule[min(epoch, len(schedule) - 1)]


class CntkMomentumSGD:
    """CNTK's momentum_sgd (unit gain) on one flat buffer holding every parameter.

    Per minibatch of n samples: G = mu * G + (1 - mu) * sum_i g_i, then W -= lr * G, with lr
    per sample and mu = exp(-n / time_constant) (0 while the time constant is 0). With a loss
    averaged over the minibatch this is torch.optim.SGD(lr=lr*n, momentum=mu, dampening=mu)
    (training.md 1.5), but exact also for the short last minibatch of an epoch, whose mu and
    lr follow its real size, and when momentum switches on, where CNTK carries G over.
    Parameters and their gradients are views into two flat tensors, so a step is three
    vector operations instead of three per parameter tensor. Convolution kernels with more
    than one input channel are held channels-last there ([out, kh, kw, in] in memory, the same
    shape and values): the layout oneDNN's channels-last convolutions read, so that neither
    the kernels nor their gradients are copied into it twice a step.
    """

    def __init__(self, parameters):
        parameters = list(parameters)
        self.parameters = torch.cat([_in_memory_order(p.detach()).reshape(-1) for p in parameters])
        self.gradients = torch.zeros_like(self.parameters)
        self.momentum = torch.zeros_like(self.parameters)
        offset = 0
        for parameter in parameters:
            size = parameter.numel()
            parameter.data = _shaped_like(self.parameters[offset : offset + size], parameter)
            parameter.grad = _shaped_like(self.gradients[offset : offset + size], parameter)
            offset += size

    def zero_grad(self):
        self.gradients.zero_()

    def step(self, lr_per_sample, momentum_time_constant, samples):
        mu = math.exp(-samples / momentum_time_constant) if momentum_time_constant else 0.0
        self.momentum.mul_(mu).add_(self.gradients, alpha=(1.0 - mu) * samples)
        self.parameters.add_(self.momentum, alpha=-lr_per_sample)


def _is_multichannel_kernel(tensor):
    return tensor.dim() == 4 and tensor.shape[1] > 1


def _in_memory_order(tensor):
    """The tensor's values in the order CntkMomentumSGD stores them (channels-last kernels)."""
    return tensor.permute(0, 2, 3, 1) if _is_multichannel_kernel(tensor) else tensor


def _shaped_like(flat, tensor):
    """A view of ``flat`` (values in _in_memory_order) with the shape of ``tensor``."""
    if _is_multichannel_kernel(tensor):
        out_channels, in_channels, height, width = tensor.shape
        return flat.view(out_channels, height, width, in_channels).permute(0, 3, 1, 2)
    return flat.view_as(tensor)


class SampleStream:
    """Training sample indices as CNTK's randomizing reader delivers them with infinite sweeps.

    Each sweep visits every sample once in a fresh random order from a seeded generator; an
    epoch takes the next epoch_size samples (a fresh order every epoch at the default
    epoch_size = 60000) and a minibatch may span two sweeps.
    """

    def __init__(self, count, generator, device="cpu"):
        self._count, self._generator = count, generator
        self._device = device
        self._order, self._next = self._new_sweep(), 0

    def _new_sweep(self):
        order = torch.randperm(self._count, generator=self._generator)
        return order.to(self._device)  # one copy per sweep, not one per minibatch

    def take(self, n):
        pieces = []
        while n > 0:
            if self._next == self._count:
                self._order, self._next = self._new_sweep(), 0
            piece = self._order[self._next : self._next + n]
            self._next += len(piece)
            n -= len(piece)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)
