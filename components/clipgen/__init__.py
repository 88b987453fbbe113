"""ClipGen: the TFX component that turns video Examples into fixed-shape clip Examples.

    from components.clipgen import ClipGen
    clipgen = ClipGen(examples=example_gen.outputs["examples"], num_frames=8, height=64, width=64, labels=labels)
    clipgen.outputs["clips"], clipgen.outputs["dead_letter"], clipgen.outputs["clip_stats"]

Modules: ``extract`` (one video -> clips, no Beam), ``transforms`` (the Beam PTransform), ``executor`` (TFX
executor), ``component`` (spec, component and artifact types).
"""
from components.clipgen.component import ClipGen, ClipGenDeadLetter, ClipGenSpec, ClipGenStatistics
from components.clipgen.executor import CLIP_STATS_FILENAME, Executor
from components.clipgen.extract import REJECT_REASONS, ClipGenConfig, Rejected, extract_clips

__all__ = ["ClipGen", "ClipGenSpec", "ClipGenDeadLetter", "ClipGenStatistics", "Executor", "ClipGenConfig",
           "Rejected", "REJECT_REASONS", "extract_clips", "CLIP_STATS_FILENAME"]
