"""A model builder far smaller than BResNet, for tests that exercise the training machinery (processes,
MultiWorkerMirroredStrategy, export) rather than the network: ``tiny_model:build_tiny_classifier``."""
from bresnet._keras import keras


def build_tiny_classifier(num_classes: int, clip_shape, dropout: float = 0.0):
    """Same signature and contract as ``bresnet:build_classifier``: float32 clips [B, T, H, W, 3] -> logits."""
    inputs = keras.Input(tuple(clip_shape))
    x = keras.layers.GlobalAveragePooling3D()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, dtype="float32")(x)  # logits stay float32 in mixed precision
    return keras.Model(inputs, outputs, name="tiny_classifier")
