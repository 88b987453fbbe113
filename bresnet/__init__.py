"""BResNet162Plus1DD: a lightweight (2+1)D ResNet-16 for video classification (Keras 2 / tf_keras)."""
from bresnet._keras import keras  # noqa: F401  (first: fixes the Keras mode)
from bresnet.blocks import BottleneckResidual2Plus1DD
from bresnet.layers import Conv2Plus1D, Conv2Plus1DLayer, HardSwish, Mish
from bresnet.model import BResNet162Plus1DD, bresnet162plus1dd, build_classifier

__all__ = [
    "BResNet162Plus1DD",
    "BottleneckResidual2Plus1DD",
    "Conv2Plus1D",
    "Conv2Plus1DLayer",
    "HardSwish",
    "Mish",
    "bresnet162plus1dd",
    "build_classifier",
]
