"""tunesmith: fine-tune pretrained models on your own datasets, on a schedule, traceably."""

__version__ = "0.1.0"
