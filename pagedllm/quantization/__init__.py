"""Quantized weights of safetensors checkpoints (FP8; AWQ, GPTQ and compressed-tensors to come):
what a checkpoint's `quantization_config` says (base.py, one module per format), and which of
its linear layers store quantized weights. Each quantized layer gets a LinearScheme, and the
platform asks the scheme for the linear method that runs it on its device."""
