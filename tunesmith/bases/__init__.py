"""Pretrained base models that ship inside pip packages, converted once into plain HF folders."""
