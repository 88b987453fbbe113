"""Pipeline definition, run configuration, runners and the command-line interface."""
import os

# The Keras decision (see bresnet/_keras.py), made before anything imports TensorFlow. Only the variable is set
# here, so `python -m pipeline --help` stays instant; modules that build models import bresnet._keras.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
