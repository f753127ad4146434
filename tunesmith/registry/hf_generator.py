"""MLflow "models from code" definition of a tunesmith causal LM (instruction tuned).

Like hf_classifier.py: copied into every logged model and executed on load, never imported
by tunesmith. The prompt template and generation length come from the model config.
"""

from __future__ import annotations

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class HFGenerator(PythonModel):
    """Prompts in (a `prompt` or `text` column, or a list of str), `response` out (greedy)."""

    def load_context(self, context):  # noqa: ANN001, ANN201
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["model"]
        config = context.model_config or {}
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # generation continues from the right end
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.template = config.get("prompt_template", "{prompt}")
        self.max_new_tokens = int(config.get("max_new_tokens", 64))
        self.max_length = int(config.get("max_length", 512))
        self.torch = torch

    # No type hints: MLflow would derive a schema from them; the logged signature rules.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        if isinstance(model_input, pd.DataFrame):
            column = next((c for c in ("prompt", "text") if c in model_input), None)
            prompts = model_input[column or model_input.columns[0]]
        else:
            prompts = model_input
        responses = []
        with self.torch.inference_mode():
            for prompt in prompts:  # one at a time: no padding effects on tiny models
                enc = self.tokenizer(self.template.format(prompt=str(prompt)), truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                          do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
                new = out[0, enc["input_ids"].shape[1]:]
                responses.append(self.tokenizer.decode(new, skip_special_tokens=True).strip())
        return pd.DataFrame({"response": responses})


set_model(HFGenerator())
