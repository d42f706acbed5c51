"""LoRA adapters held in the chip's SRAM, applied at run time on top of the printed weights.

``load_lora`` reads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) and
checks it against the base checkpoint; ``apply_lora`` is the chip's add-on path at the
adapter's own precision; ``merged_weights`` is the float reference it is verified against;
``lora_fits`` / ``target_shapes`` size an adapter (or a bare rank) against the LoRA SRAM.
"""

from taalasc.lora.adapter import ADAPTER_DTYPES, LoraAdapter, LoraPair
from taalasc.lora.peft import CONFIG_NAME, WEIGHTS_NAME, adapter_sram_bytes, load_lora, \
    read_adapter_files, write_peft_adapter
from taalasc.lora.runtime import apply_lora, lora_bytes, lora_fits, merged_weights
from taalasc.lora.targets import linear_modules, target_shapes

__all__ = ["ADAPTER_DTYPES", "CONFIG_NAME", "LoraAdapter", "LoraPair", "WEIGHTS_NAME",
           "adapter_sram_bytes", "apply_lora", "linear_modules", "load_lora", "lora_bytes",
           "lora_fits", "merged_weights", "read_adapter_files", "target_shapes",
           "write_peft_adapter"]
