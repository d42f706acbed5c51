"""Model loading: safetensors headers, sharded checkpoints, config.json, dataflow order.

Everything here reads headers only until ``Checkpoint.read`` asks for one tensor.
"""

from taalasc.model.checkpoint import Checkpoint, dataflow_order, open_checkpoint
from taalasc.model.safetensors_io import TensorInfo, read_tensor, read_tensor_raw

__all__ = ["Checkpoint", "TensorInfo", "dataflow_order", "open_checkpoint", "read_tensor",
           "read_tensor_raw"]
