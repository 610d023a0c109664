"""The recipe's network in PyTorch, and its model file.

conv5x5x32(pad) -> maxpool3/2 -> conv3x3x48 -> maxpool3/2 -> conv3x3x64 -> dense96 ->
dropout0.5 -> dense10, ReLU after each conv and dense96; glorot-uniform weights and zero biases
as CNTK initialises them; inputs are raw 0-255 pixels scaled by 1/256 inside, as the recipe's
``element_times(constant(0.00390625), input_var)``.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
INPUT_SCALE = 0.00390625  # 1/256, exactly as the recipe (not 1/255)


class ConvNet(nn.Module):
    """The recipe's layers under the recipe's names; its state dict is the model file."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 48, 3)
        self.conv3 = nn.Conv2d(48, 64, 3)
        self.f4 = nn.Linear(576, 96)
        self.z = nn.Linear(96, NUM_CLASSES)
        for module in (self.conv1, self.conv2, self.conv3, self.f4, self.z):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, pixels):
        """Logits for raw pixels 0-255, shaped [n, 784], [n, 28, 28] or [n, 1, 28, 28]."""
        x = pixels.reshape(-1, *IMAGE_SHAPE).float() * INPUT_SCALE
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 3, 2)
        x = F.relu(self.conv3(x)).flatten(1)
        x = F.dropout(F.relu(self.f4(x)), 0.5, self.training)
        return self.z(x)


def save_model(model, path):
    """Save a plain CPU state dict atomically, so a listed model file is always complete."""
    state = {
        name: tensor.detach().to("cpu", copy=True).contiguous()
        for name, tensor in model.state_dict().items()
    }
    temporary = path + ".partial"
    torch.save(state, temporary)
    os.replace(temporary, path)
