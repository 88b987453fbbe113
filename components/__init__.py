"""TFX components of the video pipeline (see README for the data flow)."""
import os

# The Keras decision (see bresnet/_keras.py), made before anything imports TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
