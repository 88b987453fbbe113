"""Pipeline definition, run configuration, runners and the command-line interface."""
import bresnet._keras  # noqa: F401  (sets the Keras mode before TensorFlow is imported)
