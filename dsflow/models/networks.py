"""Classifier architectures and the `Oracle` wrapper (a classifier any task can train or evaluate).

Every network here consumes *flattened* rows (``LabeledData.x``): the `Oracle` wrapper
checks the feature dimension, reshapes to ``image_shape`` when the network is
convolutional and applies the normalisation learnt from its training data, so flowed
particles stay in pixel space and the flow never deals with shapes.

Architectures (paper appendix C / section 7.3):

* ``lenet5``: LeNet-5 with ReLU for grey (or colour) images of side >= 12; the last
  pooling is adaptive so 28x28 (the classic case), 16x16 (USPS) or 32x32 all work.
* ``resnet18_cifar``: ResNet-18, CIFAR variant (3x3 stride-1 stem, no max-pool).
* ``mlp``: a small multi-layer perceptron for vectors such as 8x8 digits (64-d);
  ``hidden: []`` makes it a logistic regression (one linear layer + softmax).
* ``convnet``: the small ConvNet of the dataset-distillation literature (depth 3, width 128,
  instance norm, ReLU, average pooling), which distillation benchmarks train on synthetic sets.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ARCHITECTURES = ("mlp", "lenet5", "resnet18_cifar", "convnet")
CONV_ARCHITECTURES = ("lenet5", "resnet18_cifar", "convnet")


class MLP(nn.Module):
    """Fully connected ReLU network ``input_dim -> hidden... -> num_classes``."""

    def __init__(self, input_dim: int, num_classes: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = int(input_dim)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = int(h)
        layers.append(nn.Linear(width, int(num_classes)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU non-linearities (appendix C).

    conv 5x5 (pad 2) -> ReLU -> max-pool 2 -> conv 5x5 -> ReLU -> max-pool 2 ->
    adaptive average pool to 5x5 -> FC 120 -> FC 84 -> FC classes.  On 28x28 inputs the
    adaptive pool is the identity (the classic network); on other sizes it makes the
    flatten size 16*5*5 regardless of the input side.
    """

    min_side = 12

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (28, 28)):
        super().__init__()
        h, w = (int(s) for s in image_size)
        if min(h, w) < self.min_side:
            raise ValueError(
                f"lenet5 needs images of side >= {self.min_side}, got {h}x{w}; "
                "use architecture 'mlp' for small inputs such as 8x8 digits, or resize the data"
            )
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d((5, 5)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, int(num_classes)),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class ConvNet(nn.Module):
    """The ConvNet of dataset distillation (Zhao et al. 2021; the WoW paper's evaluation model).

    ``depth`` blocks of conv 3x3 (``width`` channels, pad 1) -> instance norm (affine, as
    ``GroupNorm(width, width)``) -> ReLU -> average pool 2, then one linear layer.  Instance
    norm, not batch norm: a synthetic set of 10 images gives batch statistics of 10 samples.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: Sequence[int] = (28, 28), width: int = 128,
                 depth: int = 3):
        super().__init__()
        h, w = (int(s) for s in image_size)
        if min(h, w) < 2 ** int(depth):
            raise ValueError(f"convnet with depth {depth} halves the image {depth} times: it needs a side >= "
                             f"{2 ** int(depth)}, got {h}x{w}; lower options.depth or resize the data")
        layers: list[nn.Module] = []
        channels = int(in_channels)
        for _ in range(int(depth)):
            layers += [nn.Conv2d(channels, int(width), 3, padding=1), nn.GroupNorm(int(width), int(width)), nn.ReLU(),
                       nn.AvgPool2d(2)]
            channels = int(width)
            h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * h * w, int(num_classes))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stride-1 stem, no max-pool, [2, 2, 2, 2] blocks.

    ``width`` is the number of channels of the first stage (64 in the standard network;
    tests use a small one).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        width = int(width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages = []
        in_planes = width
        for i, n_blocks in enumerate(blocks):
            planes = width * 2**i
            for j in range(int(n_blocks)):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(_BasicBlock(in_planes, planes, stride))
                in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, int(num_classes))

    def forward(self, x):
        out = self.pool(self.stages(self.stem(x)))
        return self.fc(out.flatten(1))


def build_network(architecture: str, *, input_dim: int, image_shape, num_classes: int, **options) -> nn.Module:
    """Instantiate one of `ARCHITECTURES` for the given input and class count."""
    arch = str(architecture).lower()
    if arch == "mlp":
        return MLP(input_dim, num_classes, **options)
    if arch in CONV_ARCHITECTURES:
        if image_shape is None or len(image_shape) != 3:
            raise ValueError(
                f"architecture {arch!r} is convolutional and needs image data with image_shape (C, H, W); "
                f"got image_shape={image_shape} for {input_dim}-d features. Use architecture 'mlp' for vectors."
            )
        c, h, w = image_shape
        if arch == "lenet5":
            return LeNet5(c, num_classes, (h, w), **options)
        if arch == "convnet":
            return ConvNet(c, num_classes, (h, w), **options)
        return ResNet18Cifar(c, num_classes, **options)
    raise ValueError(f"unknown oracle architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")


class Oracle(nn.Module):
    """A classifier over flattened features, with its own normalisation and label values.

    Parameters
    ----------
    network:
        The classifier body (an ``nn.Module`` taking ``(n, d)`` or ``(n, C, H, W)``).
    input_dim:
        Feature dimension ``d`` of the rows it accepts.
    image_shape:
        ``(C, H, W)`` when ``network`` is convolutional, else ``None``.
    classes:
        Label values (sorted, int64) of the logits' columns; labels need not be contiguous.
    architecture, options:
        Recorded so that a checkpoint can rebuild the network.

    Normalisation ``(x - mean) / std`` uses per-channel statistics for images and one
    global mean/std for vectors (per-feature statistics would blow up pixels that are
    constant in the training set but move during a flow).  They are buffers, so they are
    saved with the weights; `set_normalization` fits them on training data.
    """

    def __init__(self, network: nn.Module, *, input_dim: int, image_shape=None, classes=None,
                 architecture: str = "custom", options: dict | None = None):
        super().__init__()
        self.network = network
        self.input_dim = int(input_dim)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        self.architecture = architecture
        self.options = dict(options or {})
        self.frozen = False
        n_stats = self.image_shape[0] if self._is_conv else 1
        self.register_buffer("mean", torch.zeros(n_stats))
        self.register_buffer("std", torch.ones(n_stats))
        if classes is None:
            raise ValueError("Oracle: classes (the label values of the outputs) are required")
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long).flatten())
        if not bool(torch.all(self.classes[1:] > self.classes[:-1])):
            raise ValueError(f"Oracle: classes must be sorted and unique, got {self.classes.tolist()}")

    @property
    def _is_conv(self) -> bool:
        return self.architecture in CONV_ARCHITECTURES

    @property
    def num_classes(self) -> int:
        return int(self.classes.numel())

    # ---------------------------------------------------------------- normalisation
    @torch.no_grad()
    def set_normalization(self, x) -> None:
        """Fit ``mean``/``std`` to training rows ``x`` (per channel for images)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if self._is_conv:
            c = self.image_shape[0]
            per_channel = x.reshape(x.shape[0], c, -1).transpose(0, 1).reshape(c, -1)
            mean, std = per_channel.mean(1), per_channel.std(1)
        else:
            mean, std = x.mean().reshape(1), x.std().reshape(1)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std))

    def _prepare(self, x):
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            shape = tuple(x.shape)
            hint = f" (images {self.image_shape} flattened)" if self.image_shape else ""
            raise ValueError(
                f"Oracle[{self.architecture}] expects rows of {self.input_dim} features{hint}, got a tensor of "
                f"shape {shape}; flatten images to (n, d) and resize the data to the oracle's input size"
            )
        x = x.to(dtype=self.mean.dtype)
        if self._is_conv:
            x = x.reshape(x.shape[0], *self.image_shape)
            return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return (x - self.mean) / self.std

    # ---------------------------------------------------------------- inference
    def forward(self, x):
        """Logits ``(n, num_classes)`` for flattened rows ``x`` (differentiable in ``x``)."""
        return self.network(self._prepare(x))

    def log_proba(self, x):
        return torch.log_softmax(self.forward(x), dim=1)

    @torch.no_grad()
    def predict_proba(self, x, batch_size: int = 1024):
        """Class probabilities, batched and without gradients."""
        return batched_apply(lambda b: torch.softmax(self.forward(b), 1), x, batch_size, self.mean.device)

    @torch.no_grad()
    def predict(self, x, batch_size: int = 1024):
        """Predicted label *values* (``classes[argmax]``), int64 on the input's device."""
        x = torch.as_tensor(x)
        idx = self.predict_proba(x, batch_size).argmax(1)
        return self.classes.to(idx.device)[idx].to(x.device)

    # ---------------------------------------------------------------- freezing
    def freeze(self) -> "Oracle":
        """No parameter requires grad and the module stays in eval mode (BatchNorm, dropout)."""
        self.requires_grad_(False)
        self.frozen = True
        return self.eval()

    def unfreeze(self) -> "Oracle":
        """Parameters require grad again and ``train()`` works: for fine-tuning a pretrained
        classifier (`dsflow.models.fine_tune_classifier`), which a frozen one must refuse."""
        self.frozen = False
        self.requires_grad_(True)
        return self

    def train(self, mode: bool = True):  # noqa: D102 - a frozen oracle never leaves eval mode
        return super().train(bool(mode) and not getattr(self, "frozen", False))

    def describe(self) -> dict:
        return {
            "architecture": self.architecture,
            "options": dict(self.options),
            "input_dim": self.input_dim,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "classes": self.classes.tolist(),
        }


def batched_apply(fn, x, batch_size: int, device=None):
    """``fn`` applied to row batches of ``x`` (moved to ``device``), concatenated on x's device."""
    x = torch.as_tensor(x)
    if batch_size is None or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    outs = []
    for start in range(0, x.shape[0], int(batch_size)):
        b = x[start : start + int(batch_size)]
        outs.append(fn(b.to(device) if device is not None else b).to(x.device))
    return torch.cat(outs, 0)


def make_oracle(architecture: str, *, input_dim: int, image_shape, classes, seed: int | None = 0, **options) -> Oracle:
    """Build an untrained `Oracle` (weights initialised under ``seed``)."""
    arch = str(architecture).lower()
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown oracle architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    if arch != "mlp" and image_shape is not None and len(image_shape) == 3:
        prod = int(image_shape[0]) * int(image_shape[1]) * int(image_shape[2])
        if prod != int(input_dim):
            raise ValueError(f"image_shape {tuple(image_shape)} has {prod} values but input_dim is {input_dim}")
    classes = torch.as_tensor(classes, dtype=torch.long).flatten()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        net = build_network(arch, input_dim=int(input_dim), image_shape=image_shape, num_classes=int(classes.numel()), **options)
    return Oracle(net, input_dim=input_dim, image_shape=image_shape,
                  classes=classes, architecture=arch, options=options)
