"""TFX components of the video pipeline (see README for the data flow)."""
import bresnet._keras  # noqa: F401  (sets the Keras mode before TensorFlow is imported)
