"""A sentence-transformers BERT model directory (safetensors) → one GGUF file for llama.cpp.

What llama.cpp's own ``convert_hf_to_gguf.py`` does for ``BertModel``, without PyTorch: the tensors
are read with ``safetensors.numpy`` and renamed with the ``gguf`` package's name map, kept in F32
(the model is small, and F32 keeps the vectors within float rounding of the reference). The
vocabulary is written the way llama.cpp's WordPiece tokenizer expects it ("phantom space" pieces),
so ``llama_cpp.server`` can serve the file on its own; gatewright itself tokenizes with the model's
``tokenizer.json`` (the reference tokenizer) and hands llama.cpp token ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

# Pooling modes of sentence-transformers' Pooling config → llama.cpp's pooling types.
POOLING: dict[str, gguf.PoolingType] = {
    "pooling_mode_mean_tokens": gguf.PoolingType.MEAN,
    "pooling_mode_cls_token": gguf.PoolingType.CLS,
}


class ConversionError(ValueError):
    """The directory is not a model this converter knows (a BERT sentence-transformers model)."""


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def pooling_of(model_dir: Path) -> gguf.PoolingType:
    config = _json(model_dir / "1_Pooling" / "config.json")
    chosen = [mode for mode in POOLING if config.get(mode)]
    others = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in POOLING]
    if len(chosen) != 1 or others:
        raise ConversionError(f"{model_dir}: unsupported pooling {config}; mean or CLS pooling only")
    return POOLING[chosen[0]]


def _phantom(token: str) -> str:
    # llama.cpp's WordPiece vocabulary marks word starts with U+2581 instead of marking "##" suffixes.
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def _vocab(model_dir: Path) -> tuple[list[str], list[int]]:
    tokenizer = _json(model_dir / "tokenizer.json")
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    special = {t["content"] for t in tokenizer.get("added_tokens", ()) if t.get("special")}
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    return [_phantom(t) for t in tokens], [int(t) for t in types]


def convert(model_dir: Path, target: Path) -> None:
    """Write ``target`` (GGUF, F32) from the sentence-transformers BERT model in ``model_dir``."""
    config = _json(model_dir / "config.json")
    if config.get("model_type") != "bert":
        raise ConversionError(f"{model_dir}: model_type {config.get('model_type')!r}; only BERT models convert")
    blocks = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
    writer = gguf.GGUFWriter(str(target), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name(model_dir.name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling_of(model_dir))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, types = _vocab(model_dir)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    special = gguf.SpecialVocab(model_dir, special_token_types=("unk", "sep", "pad", "mask"), n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)
    cls_id = tokens.index("[CLS]") if "[CLS]" in tokens else None
    if cls_id is not None:
        writer.add_bos_token_id(cls_id)  # llama.cpp's WordPiece tokenizer opens with "bos"
    for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
        if name.startswith("pooler.") or name.endswith("position_ids"):
            continue  # the pooler head is unused by sentence-transformers; position ids are implicit
        mapped = names.get_name(name.removeprefix("bert."), try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConversionError(f"{model_dir}: tensor {name} has no GGUF name")
        writer.add_tensor(mapped, np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
