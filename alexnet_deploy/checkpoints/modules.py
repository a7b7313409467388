"""The built-in AlexNet networks as nn.Modules: torchvision-style, paper widths, the seeds' own module names.

``checkpoints.layouts`` names each variant and detects which one a state_dict is; this
module only builds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PaperLRN(nn.Module):
    """LRN as the AlexNet paper writes it: ``x / (k + alpha * sum_{|j-c|<=n//2} x_j^2)^beta``.

    Alpha is not divided by ``n`` (unlike ``nn.LocalResponseNorm``); the window spans
    ``n//2`` channels each side. Same numbers as seed 001's looped module, vectorised.
    """

    def __init__(self, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75):
        super().__init__()
        self.n, self.k, self.alpha, self.beta = n, k, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.n // 2
        window = 2 * half + 1
        squared = F.pad((x * x).unsqueeze(1), (0, 0, 0, 0, half, half))
        summed = F.avg_pool3d(squared, (window, 1, 1), stride=1).squeeze(1) * window
        return x / (self.k + self.alpha * summed).pow(self.beta)

    def onnx_lrn(self) -> dict:
        """The exact ONNX LRN attributes for this module."""
        size = 2 * (self.n // 2) + 1
        return {"size": size, "alpha": self.alpha * size, "beta": self.beta, "bias": self.k}


def _features(widths, pad1: int, lrn: bool) -> nn.Sequential:
    c1, c2, c3, c4, c5 = widths
    norm = (lambda: [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)]) if lrn else (lambda: [])
    return nn.Sequential(
        nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=pad1), nn.ReLU(inplace=True), *norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True), *norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def _classifier(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(p=0.5), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
        nn.Dropout(p=0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class FeaturesClassifierAlexNet(nn.Module):
    """``features`` / [``avgpool``] / ``classifier`` AlexNets: torchvision's and its relatives."""

    def __init__(self, num_classes: int, widths=(64, 192, 384, 256, 256), pad1: int = 2,
                 hidden: int = 4096, avgpool: bool = True, lrn: bool = False):
        super().__init__()
        self.features = _features(widths, pad1, lrn)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6)) if avgpool else nn.Identity()
        self.classifier = _classifier(widths[4] * 6 * 6, hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class PaperHandLRNAlexNet(nn.Module):
    """Seed 001: C1..C5 / F1..F3, paper LRN after ReLU on C1 and C2, ReLU on the logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.act = nn.ReLU(True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        self.dropout = nn.Dropout(0.5)
        self.C1 = nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=2)
        self.N1 = PaperLRN()
        self.C2 = nn.Conv2d(96, 256, kernel_size=5, stride=1, padding=2)
        self.N2 = PaperLRN()
        self.C3 = nn.Conv2d(256, 384, kernel_size=3, stride=1, padding=1)
        self.C4 = nn.Conv2d(384, 384, kernel_size=3, stride=1, padding=1)
        self.C5 = nn.Conv2d(384, 256, kernel_size=3, stride=1, padding=1)
        self.F1 = nn.Linear(256 * 6 * 6, 4096)
        self.F2 = nn.Linear(4096, 4096)
        self.F3 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.N1(self.act(self.C1(x))))
        x = self.pool(self.N2(self.act(self.C2(x))))
        x = self.act(self.C3(x))
        x = self.act(self.C4(x))
        x = self.pool(self.act(self.C5(x)))
        x = torch.flatten(x, 1)
        x = self.dropout(self.act(self.F1(x)))
        x = self.dropout(self.act(self.F2(x)))
        return self.act(self.F3(x))


class LayersFcAlexNet(nn.Module):
    """Seed 002: layer1/layer2/layer3 + fc; ``norm1``/``norm2`` exist but forward never calls them."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.norm1 = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2)
        self.layer2 = nn.Sequential(nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.norm2 = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2)
        self.layer3 = nn.Sequential(
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.fc = nn.Sequential(
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(x, 1))
