"""Command-line tools: clip-convert, benchmarks, the demo and Flax fine-tuning."""
