"""The training step on a CPU, arranged to run about twice as fast as autograd on the network.

The same maths as ``F.cross_entropy(model(x), y).backward()``: a channels-last forward pass
that keeps what its backward needs, and that backward written out. Past conv1's block, the
backward makes the very calls autograd would make for this forward, so those gradients are bit
for bit autograd's (and conv1's too with the PyTorch operators), without building the graph,
saving tensors for it or accumulating into .grad. conv1 with its pooling, bias and ReLU runs as
the compiled kernels (conv1_kernels.py) where they build, else as PyTorch operators here.
"""

import torch
import torch.nn.functional as F

from .network import INPUT_SCALE

aten = torch.ops.aten
POOL_3_2 = ([3, 3], [2, 2], [0, 0], [1, 1], False)  # kernel, stride, padding, dilation, ceil
CONV_3_1 = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, ..., groups


class FastCpuStep:
    """A ConvNet's training step and forward pass on a CPU (``kernels``: a Conv1PoolKernels or
    None for the PyTorch operators)."""

    def __init__(self, model, kernels=None):
        self.model = model
        self.kernels = kernels

    def train_step(self, pixels, labels):
        """One minibatch: returns (logits, mean cross-entropy loss) and leaves the loss's
        gradient in every parameter's .grad (replacing what was there). The dropout mask comes
        from the global generator exactly as F.dropout draws it."""
        with torch.no_grad():
            logits, saved = self._forward(pixels)
            log_probs = aten._log_softmax(logits, 1, False)
            loss, total_weight = aten.nll_loss_forward(log_probs, labels, None, 1, -100)
            self._backward(saved, labels, log_probs, loss, total_weight)
        return logits, loss

    def forward(self, pixels):
        """model.forward()'s values, computed as train_step does (no gradients)."""
        with torch.no_grad():
            return self._forward(pixels)[0]

    def _forward(self, pixels):
        """Logits, and the activations the backward pass needs; after conv1's block,
        channels-last activations, where oneDNN's convolutions and pooling are fastest."""
        m = self.model
        if self.kernels is not None and pixels.dtype == torch.uint8:
            relu1, conv1_backward = self.kernels.forward(pixels, m.conv1.weight, m.conv1.bias)
        else:
            relu1, conv1_backward = conv1_block(pixels, m.conv1.weight, m.conv1.bias)
        conv2 = F.conv2d(relu1, m.conv2.weight, m.conv2.bias)
        pool2, pool2_at = aten.max_pool2d_with_indices(conv2, *POOL_3_2)
        relu2 = pool2.relu_()
        relu3 = F.conv2d(relu2, m.conv3.weight, m.conv3.bias).relu_()
        flat3 = relu3.contiguous().flatten(1)
        relu4 = torch.addmm(m.f4.bias, flat3, m.f4.weight.t()).relu_()
        keep4, drop4 = None, relu4
        if m.training:  # F.dropout's own arithmetic, the mask kept for the backward
            keep4 = torch.empty_like(relu4).bernoulli_(0.5).div_(0.5)
            drop4 = relu4 * keep4
        logits = torch.addmm(m.z.bias, drop4, m.z.weight.t())
        saved = (conv1_backward, relu1, conv2, pool2_at, relu2, relu3, flat3, relu4, keep4, drop4)
        return logits, saved

    def _backward(self, saved, labels, log_probs, loss, total_weight):
        """The gradients of the mean cross-entropy, from the top down, into each .grad. Each
        line is the formula autograd's generated backward uses for that forward call (a linear
        layer's weight gradient is grad.t() @ input, as for a transposed weight)."""
        m = self.model
        conv1_backward, relu1, conv2, pool2_at, relu2, relu3, flat3, relu4, keep4, drop4 = saved
        n = relu1.shape[0]
        grad = aten.nll_loss_backward(
            torch.ones_like(loss), log_probs, labels, None, 1, -100, total_weight
        )
        grad = aten._log_softmax_backward_data(grad, log_probs, 1, torch.float32)
        set_gradients(m.z, grad.t().mm(drop4), grad.sum([0], keepdim=True))
        grad = grad.mm(m.z.weight)
        if keep4 is not None:
            grad = grad * keep4
        grad = aten.threshold_backward(grad, relu4, 0)
        set_gradients(m.f4, grad.t().mm(flat3), grad.sum([0], keepdim=True))
        grad = grad.mm(m.f4.weight)
        grad = aten.threshold_backward(grad.view(n, 64, 3, 3), relu3, 0)
        grad, weight, bias = aten.convolution_backward(
            grad, relu2, m.conv3.weight, [64], *CONV_3_1, [True, True, True]
        )
        set_gradients(m.conv3, weight, bias)
        grad = aten.threshold_backward(grad, relu2, 0)
        grad = aten.max_pool2d_with_indices_backward(grad, conv2, *POOL_3_2, pool2_at)
        grad, weight, bias = aten.convolution_backward(
            grad, relu1, m.conv2.weight, [48], *CONV_3_1, [True, True, True]
        )
        set_gradients(m.conv2, weight, bias)
        set_gradients(m.conv1, *conv1_backward(grad))


def conv1_block(pixels, weight, bias):
    """ReLU(max-pool(conv1(pixels)) + bias) with PyTorch operators, channels-last, and a function
    from the gradient there to conv1's kernel and bias gradients.

    - conv1 (one input channel) as a matrix product over im2col columns. The columns are built
      tap-major ([25, n*27*27]: one contiguous row per kernel tap, a copy with long contiguous
      runs, several times faster than position-major patches) and handed to the product
      transposed, which costs it nothing. The product is [n*27*27, 32]: already the
      channels-last layout the later layers prefer.
    - Only the 27x27 conv1 outputs that the first 3x3/2 max-pool reads: it never looks at row
      or column 27.
    - conv1's bias and the ReLU after the max-pool instead of before: max commutes with adding
      a per-channel constant and with a monotone function (in floating point too, rounding
      being monotone), so the values are unchanged and the gradient reaches the same element
      (but where adding the bias rounds two different values to one, a tie the pool would have
      broken by position) while the bias, ReLU and their backward touch a quarter of the data.
    """
    n = pixels.shape[0]
    x = pixels.reshape(n, 28, 28).float().mul_(INPUT_SCALE)
    x = F.pad(x, (2, 1, 2, 1))  # 31x31: the 5x5 windows of outputs 0..26
    taps = x.unfold(1, 5, 1).unfold(2, 5, 1).permute(3, 4, 0, 1, 2).reshape(25, n * 729)
    conv1 = torch.mm(taps.t(), weight.view(32, 25).t())
    conv1 = conv1.view(n, 27, 27, 32).permute(0, 3, 1, 2)
    pool1, pool1_at = aten.max_pool2d_with_indices(conv1, *POOL_3_2)
    relu1 = pool1.add_(bias.view(1, 32, 1, 1)).relu_()

    def backward(grad):
        grad = aten.threshold_backward(grad, relu1, 0)
        bias_grad = grad.sum([0, 2, 3], keepdim=True)
        grad = aten.max_pool2d_with_indices_backward(grad, conv1, *POOL_3_2, pool1_at)
        grad = grad.permute(0, 2, 3, 1).reshape(-1, 32)
        return taps_times_grad(taps, grad).t(), bias_grad

    return relu1, backward


def taps_times_grad(taps, grad):
    """conv1's kernel gradient ``taps @ grad`` ([25, P] @ [P, 32]).

    A product with a long inner dimension (P = n*27*27) and a tiny result, which a single mm
    runs at half a two-core machine's rate; split into two halves along P, a batched product
    runs them on two cores at once, and the halves are then added.
    """
    positions = taps.shape[1]
    if positions % 2:
        return torch.mm(taps, grad)
    half = positions // 2
    halves = torch.bmm(taps.view(25, 2, half).transpose(0, 1), grad.reshape(2, half, 32))
    return halves.sum(0)


def set_gradients(layer, weight, bias):
    """Put a layer's gradients into its parameters' .grad, replacing what was there."""
    for parameter, gradient in ((layer.weight, weight), (layer.bias, bias)):
        gradient = gradient.view(parameter.shape)
        if parameter.grad is None:
            parameter.grad = gradient.clone()
        else:
            parameter.grad.copy_(gradient)
