"""``clipfuse bench``: latency, memory and training speed of configs side by side, on every
inference path (eager, channels-last, bf16, ONNX Runtime fp32 / int8), with the machine's
measured peaks."""
