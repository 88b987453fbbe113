import os

# Same Keras mode as every entry point (see bresnet/_keras.py), before anything imports TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
