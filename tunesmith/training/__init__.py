"""The training core. Imports only torch, transformers, peft, accelerate, pandas, pyarrow."""
