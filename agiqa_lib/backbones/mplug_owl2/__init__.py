"""mPLUG-Owl2 (MA-AGIQA's MLLM) and Q-Align on the transformers this project installs.

No ``trust_remote_code`` and no pin to transformers 4.28-4.37: the released architecture is
rebuilt from transformers' LLaMA pieces with the hub checkpoint's weight names, so
``MAGAer13/mplug-owl2-llama2-7b`` and ``q-future/one-align`` load unchanged.

- `config.MPLUGOwl2Config`: the hub's config.json (``model_type: mplug_owl2``).
- `model.MPLUGOwl2ForCausalLM`: ``from_pretrained(folder_or_hub_id, dtype=...)``;
  ``forward(input_ids, images=..., attention_mask=..., output_hidden_states=...)``.
- `loading.load_mplug_owl2(source, device=, dtype=, quantization=None|"8bit"|"4bit")`
  -> (model, processor); `loading.is_mplug_owl2(source)`.
- `processing`: ``question_prompt``, ``tokenizer_image_token``, `MPLUGOwl2Processor`.
- `encoder.MPLUGOwl2SemanticEncoder`: MA-AGIQA's vectors as ``getFeature.py`` (what
  ``create_mllm("full")`` returns by default), with ``token_layout(question)``.
- `qalign`: `QAlignScorer`, ``load_qalign(profile, model_id)``,
  ``q_align_scores(df, scorer) -> DataFrame(name, score)``, ``q_align_records(...)``.
- `tiny.build_tiny_mplug_owl2(folder)`: the random test checkpoint of the ``tiny`` profile.

Modules are imported individually (this file imports nothing, so importing the package is free).
"""
