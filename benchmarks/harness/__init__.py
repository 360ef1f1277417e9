"""What every benchmark shares: data, the load generator, statistics, reports, the server."""

import os

# Benchmarks run on local models only; huggingface_hub reads this once, when first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
