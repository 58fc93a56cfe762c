"""Tiny, randomly initialised Florence-2 and Qwen2.5-VL model directories with offline tokenizers, for tests.

The real transformers architectures (``Florence2ForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``)
with 0.1–0.2 M parameters, saved with their processors the way ``from_pretrained`` expects, so tests go through
the real loading, generation, LoRA fine-tuning and serving paths without a download.

Tokenizers are byte-level BPE vocabularies with whole-word merges for the known words (any text tokenizes, an
unknown word falls back to its bytes):
- Florence-2: a BART tokenizer (``<s>``, ``<pad>``, ``</s>``, ``<unk>``), the ``<image>`` token and the 1000
  location tokens ``<loc_0>`` … ``<loc_999>``;
- Qwen2.5-VL: a Qwen2 tokenizer with the chat and vision special tokens and a chat template that writes the
  image placeholder where the message has an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from tests.support.tiny_grounders import WORDS, _need_model_stack

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_bpe(words: Iterable[str], first: Sequence[str] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (``first`` tokens, then the 256 byte symbols) with merges for ``words``."""
    from tokenizers import pre_tokenizers

    vocab: dict[str, int] = {}
    for token in list(first) + sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list("Ġ" + word.lower())
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    return vocab, merges


def build_florence_tokenizer(words: Iterable[str] = WORDS):
    """A ``BartTokenizer`` with Florence-2's ``<image>`` and location tokens."""
    _need_model_stack()
    from transformers import BartTokenizer

    vocab, merges = _byte_bpe(words, first=("<s>", "<pad>", "</s>", "<unk>"))
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_tokens([f"<loc_{i}>" for i in range(1000)])
    return tokenizer


def save_tiny_florence2(path: str | Path, seed: int = 0, image_size: int = 64, words: Sequence[str] = WORDS) -> Path:
    """Build a random tiny ``Florence2ForConditionalGeneration`` (DaViT + BART) + processor and save them."""
    _need_model_stack()
    import torch
    from transformers import (BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)

    path = Path(path)
    tokenizer = build_florence_tokenizer(words)
    vision = Florence2VisionConfig(depths=[1, 1, 1, 1], embed_dim=[16, 16, 32, 32], num_heads=[1, 1, 2, 2],
                                   num_groups=[1, 1, 2, 2], window_size=2, projection_dim=32, drop_path_rate=0.0)
    text = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                      max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      decoder_start_token_id=tokenizer.eos_token_id, forced_bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(
        Florence2Config(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id))
    # the image is cut into (size/32)² patches by DaViT's strides (4·2·2·2), plus one pooled token
    image_processor = CLIPImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False,
                                         image_seq_length=(image_size // 32) ** 2 + 1)
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_qwen_tokenizer(words: Iterable[str] = WORDS):
    """A ``Qwen2Tokenizer`` with the chat and vision special tokens."""
    _need_model_stack()
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_bpe(list(words) + ["bbox_2d", "json", "label"])
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS)})
    return tokenizer


def save_tiny_qwen25_vl(path: str | Path, seed: int = 0, max_side: int = 112, words: Sequence[str] = WORDS) -> Path:
    """Build a random tiny ``Qwen2_5_VLForConditionalGeneration`` + processor and save them to ``path``.

    The image processor resizes inputs to at most ``max_side``² pixels (multiples of 28), so the answer's pixel
    space differs from the image's and the grounder's mapping back is exercised.
    """
    _need_model_stack()
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    path = Path(path)
    tokenizer = build_qwen_tokenizer(words)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         bos_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0], window_size=56, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_side * max_side, patch_size=14,
                                            merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN_CHAT_TEMPLATE)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def force_answer(path: str | Path, answer: str) -> list[int]:
    """Make the saved model at ``path`` answer ``answer`` under greedy decoding, through its generation config.

    A random tiny model answers noise; this writes ``sequence_bias`` (a standard generation setting) so that
    each next token of ``answer`` gets a bias growing with the length of the matched prefix: the model decodes
    ``answer`` and then its end token, through the real ``generate`` path. Returns the answer's token ids.
    Biases of matching keys add up, so they double with the prefix length: the full prefix's bias exceeds the
    sum of every shorter key's (a repeated token such as a backtick cannot win by accumulating them).
    """
    _need_model_stack()
    from transformers import AutoProcessor, GenerationConfig

    path = Path(path)
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    config = GenerationConfig.from_pretrained(path)
    config.sequence_bias = [[ids[: k + 1], 20.0 * 2.0 ** k] for k in range(len(ids))]
    config.save_pretrained(path)
    return ids
