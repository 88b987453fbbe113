"""BResNet162Plus1DD: a lightweight (2+1)D ResNet-16 for video classification (Keras 2 / tf_keras)."""
from bresnet._keras import keras  # noqa: F401  (first: fixes the Keras mode)
