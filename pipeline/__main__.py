import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before anything imports TensorFlow (see bresnet/_keras.py)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.cli import main  # noqa: E402

sys.exit(main())
