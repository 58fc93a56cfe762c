"""Tiny, randomly initialised Grounding DINO and OWLv2 model directories with offline tokenizers, for tests.

Why they are built here and not downloaded: CI has no hub access. The directories are what ``from_pretrained``
expects (``config.json``, ``model.safetensors``, processor and tokenizer files), so tests go through the real
loading, inference, fine-tuning and reloading paths with models of 0.07–0.5 M parameters.

Tokenizers are built from a word list:
- Grounding DINO: a BERT WordPiece vocabulary laid out like ``bert-base-uncased`` where it matters —
  transformers' Grounding DINO hard-codes the ids of ``[CLS]`` (101), ``[SEP]`` (102), ``.`` (1012) and ``?`` (1029)
  as phrase delimiters, so those ids are kept; every printable ASCII character (and its ``##`` form) is in the
  vocabulary, so any expression tokenizes.
- OWLv2: a byte-level BPE (CLIP) vocabulary with merges for the known words (an unknown word falls back to
  its characters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

WORDS: tuple[str, ...] = tuple(
    """the a an of at on in to and with near by is are this that left right top bottom upper lower center centre
    middle largest smallest large small big vehicle vehicles building buildings storage tank tanks roundabout
    airplane ship harbor bridge car road field court tennis basketball ground track stadium dam chimney windmill
    train station golf expressway overpass toll service area baseball diamond north south east west""".split()
)


def _need_model_stack() -> None:
    """Skip the calling test in the light install (no torch / transformers); the full install always has them."""
    import pytest

    pytest.importorskip("torch")
    pytest.importorskip("transformers")


def build_bert_tokenizer(words: Iterable[str] = WORDS):
    """A ``BertTokenizer`` whose special ids match ``bert-base-uncased`` (Grounding DINO needs them)."""
    _need_model_stack()
    from transformers import BertTokenizer

    vocab: list[str] = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    while len(vocab) < 1012:
        vocab.append(f"[unused{len(vocab)}]")
    vocab.append(".")
    while len(vocab) < 1029:
        vocab.append(f"[unused{len(vocab)}]")
    vocab.append("?")
    seen = set(vocab)
    for token in [chr(c) for c in range(33, 127)] + [f"##{chr(c)}" for c in range(33, 127)] + [w.lower() for w in words]:
        if token not in seen:
            vocab.append(token)
            seen.add(token)
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def build_clip_tokenizer(words: Iterable[str] = WORDS):
    """A byte-level BPE ``CLIPTokenizer`` with whole-word merges for ``words``."""
    _need_model_stack()
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word.lower())
        pieces[-1] += "</w>"
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges)


def tiny_grounding_dino_config(vocab_size: int, num_queries: int = 30):
    """The smallest Grounding DINO transformers builds (environment.md: d_model divisible by 32, ≥ 2 decoder layers)."""
    _need_model_stack()
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    return GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7, out_indices=[2, 3, 4]
        ),
        text_config=BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64,
        ),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=num_queries, max_text_len=32,
    )


def save_tiny_grounding_dino(path: str | Path, seed: int = 0, image_size: int = 128, words: Sequence[str] = WORDS) -> Path:
    """Build a random tiny ``GroundingDinoForObjectDetection`` + processor and save them to ``path``."""
    _need_model_stack()
    import torch
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    path = Path(path)
    tokenizer = build_bert_tokenizer(words)
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(tiny_grounding_dino_config(len(tokenizer)))
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_owlv2(path: str | Path, seed: int = 0, image_size: int = 64, words: Sequence[str] = WORDS) -> Path:
    """Build a random tiny ``Owlv2ForObjectDetection`` + processor and save them to ``path``."""
    _need_model_stack()
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    path = Path(path)
    tokenizer = build_clip_tokenizer(words)
    vocab = tokenizer.get_vocab()
    config = Owlv2Config(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=image_size, patch_size=16,
        ),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": image_size, "width": image_size}), tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def write_synthetic_rrsis(
    root: str | Path,
    splits: dict[str, int] | None = None,
    seed: int = 0,
    size: int = 128,
    n_objects: int = 1,
    kinds: Sequence[str] | None = None,
) -> Path:
    """Write synthetic scenes (``annotate.synthetic.make_scene``) in the RRSIS-D layout of formats.md.

    ``splits`` maps split name → number of images; every object of a scene becomes one ref with its expression
    and exact mask (COCO RLE, standard ``category_id`` and xywh ``bbox``). Returns ``root``.
    """
    import json
    import pickle

    import cv2
    import numpy as np
    from pycocotools import mask as mask_utils

    from annotate.synthetic import KINDS, make_scene

    root = Path(root)
    splits = splits or {"train": 8, "val": 4, "test": 4}
    kinds = tuple(kinds or KINDS)
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "rrsisd").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": k, "supercategory": k} for i, k in enumerate(KINDS)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, refs = [], [], []
    image_id = ann_id = sent_id = 0
    scene_seed = seed * 10_000
    for split, count in splits.items():
        for _ in range(count):
            scene = make_scene(seed=scene_seed, height=size, width=size, n_objects=n_objects,
                               kinds=tuple(kinds[(scene_seed + j) % len(kinds)] for j in range(len(kinds))))
            scene_seed += 1
            image_id += 1
            file_name = f"synthetic_{image_id:05d}.png"
            cv2.imwrite(str(image_dir / file_name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
            for obj in scene.objects:
                ann_id += 1
                sent_id += 1
                rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                x0, y0, x1, y1 = obj.box
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_id[obj.category],
                                    "segmentation": rle, "area": int(obj.mask.sum()),
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
                tokens = obj.expression.lower().split()
                refs.append({"ref_id": ann_id, "ann_id": ann_id, "image_id": image_id,
                             "category_id": cat_id[obj.category], "file_name": file_name, "split": split,
                             "sent_ids": [sent_id],
                             "sentences": [{"sent_id": sent_id, "sent": " ".join(tokens), "raw": obj.expression,
                                            "tokens": tokens}]})
    (root / "rrsisd" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8")
    with open(root / "rrsisd" / "refs(unc).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=4)
    return root


#: The box every image of :func:`write_fixed_layout_rrsis` has its object in (128×128 images).
FIXED_BOX = (32.0, 40.0, 96.0, 88.0)


def write_fixed_layout_rrsis(root: str | Path, splits: dict[str, int] | None = None, seed: int = 0) -> Path:
    """An RRSIS dataset that a 0.5 M-parameter detector can learn in a few dozen CPU steps.

    Each 128×128 image is a synthetic background with one building (a flat rectangle of a random colour) at
    :data:`FIXED_BOX`, named "the building in the center". Fine-tuning tests use it to check that training
    moves the chosen box onto the object; real grounding quality is measured by ``pslg eval``, not here.
    """
    import json
    import pickle

    import cv2
    import numpy as np
    from pycocotools import mask as mask_utils

    from annotate.synthetic import make_scene

    root = Path(root)
    splits = splits or {"train": 4, "val": 2}
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "rrsisd").mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = (int(v) for v in FIXED_BOX)
    images, annotations, refs = [], [], []
    n = 0
    for split, count in splits.items():
        for _ in range(count):
            n += 1
            rng = np.random.default_rng(seed * 1000 + n)
            image = make_scene(seed=seed * 1000 + n, height=128, width=128, n_objects=0).image.copy()
            image[y0:y1, x0:x1] = rng.integers(0, 256, size=3)
            mask = np.zeros((128, 128), np.uint8)
            mask[y0:y1, x0:x1] = 1
            file_name = f"fixed_{n:04d}.png"
            cv2.imwrite(str(image_dir / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            images.append({"id": n, "file_name": file_name, "width": 128, "height": 128})
            annotations.append({"id": n, "image_id": n, "category_id": 1, "segmentation": rle, "area": int(mask.sum()),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
            raw = "the building in the center"
            refs.append({"ref_id": n, "ann_id": n, "image_id": n, "category_id": 1, "file_name": file_name,
                         "split": split, "sent_ids": [n],
                         "sentences": [{"sent_id": n, "sent": raw, "raw": raw, "tokens": raw.split()}]})
    (root / "rrsisd" / "instances.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "building", "supercategory": "building"}]}), encoding="utf-8")
    with open(root / "rrsisd" / "refs(unc).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=4)
    return root
