"""bench.op_profile reads TensorFlow's own profiler trace of the Trainer's train step (tiny clips; no time asserted)."""
from bench.op_profile import profile


def test_profile_finds_the_convolutions_and_the_optimizer_in_the_trace():
    result = profile((2, 16, 16, 3), batch=2, steps=1, precision="float32")
    types = {op: count for op, _, _, count in result["by_type"]}
    # 19 (2+1)D convolutions, each a spatial and a temporal Conv3D: forward and both gradients every step.
    assert sum(count for op, count in types.items() if op.endswith("Conv3D")) == 38
    assert any("Conv3DBackpropFilter" in op for op in types) and any("Conv3DBackpropInput" in op for op in types)
    assert types.get("AssignSubVariableOp", 0) > 0       # the optimizer's updates are in the trace too
    assert abs(sum(share for _, _, share, _ in result["by_type"]) - 1.0) < 1e-9
    assert result["precision"] == "float32" and result["op_ms_per_step"] > 0
