"""Simulation: the float32 reference forward pass and the bit-accurate chip model.

``run_float`` follows the Hugging Face implementations in float32; ``run_chip`` runs the same
graph with the printed datapath's integer arithmetic (see ``taalasc.sim.chip`` for the
datapath contract). ``compare`` gives the quality figures between the two.
"""

from taalasc.sim.chip import (ChipOps, ChipWeights, DequantizedSource, accumulator_bits_needed,
                              chip_weights, group_dot, quantize_activations, run_chip, tree_sum)
from taalasc.sim.float_ref import (ArraySource, CheckpointSource, FloatOps, WeightSource, erf,
                                   gelu_exact, run_float)
from taalasc.sim.graph import SimResult, rope_inv_freq
from taalasc.sim.quality import (TextQuality, compare, embedding_cosine, kl_divergence,
                                 token_nll)

__all__ = [
    "ArraySource", "CheckpointSource", "ChipOps", "ChipWeights", "DequantizedSource",
    "FloatOps", "SimResult", "TextQuality", "WeightSource", "accumulator_bits_needed",
    "chip_weights", "compare", "embedding_cosine", "erf", "gelu_exact", "group_dot",
    "kl_divergence", "quantize_activations", "rope_inv_freq", "run_chip", "run_float",
    "token_nll", "tree_sum",
]
