"""Train, measure and ship the tiny CLIP and its multilingual student (reproducible from a seed).

    python -m laion_hf.testing.train_tiny [--seed 0] [--train-size 16000] [--epochs 6]

1. CLIP: the ``laion-hf-tiny`` open_clip config trained contrastively (open_clip's
   ``ClipLoss``) on synthetic scenes with their English captions.
2. Multilingual student: a tiny DistilBERT (``transformers``) with mean pooling
   and a Dense projection, distilled so that its embedding of a caption in
   English, German, French or Spanish matches the CLIP text tower's embedding
   of the English caption: the recipe of clip-ViT-B-32-multilingual-v1,
   at toy scale, saved in the same sentence-transformers layout.
3. Measure on held-out seeds: image->text R@1, and the filter's precision and
   recall on matched vs mismatched pairs at thresholds calibrated on a
   separate held-out calibration split.

Writes ``weights/laion-hf-tiny.safetensors`` (fp16), ``weights/laion-hf-tiny-multilingual/``
and ``weights/laion-hf-tiny.quality.json`` (thresholds the demo recipe reads, and the figures).
Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from laion_hf.models.clip import TINY, TINY_MULTILINGUAL, TINY_QUALITY, TINY_WEIGHTS, register_tiny_config, sha256_file
from laion_hf.testing.synthetic import LANGUAGES, caption, mismatched_caption, sample
from laion_hf.testing.synthetic.attributes import COLOURS, LAYOUTS, MAX_COUNT, SHAPES, TEXTURES, Attributes

CALIBRATION_SEEDS = range(1_000_000, 1_001_000)
TEST_SEEDS = range(2_000_000, 2_001_000)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _pixels(images, mean, std) -> torch.Tensor:
    """uint8 HWC images -> normalised CHW float batch (what open_clip's preprocess yields at 64x64)."""
    array = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    return (array - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_clip(seed: int, train_size: int, epochs: int, batch_size: int, lr: float) -> torch.nn.Module:
    import open_clip
    from open_clip.loss import ClipLoss

    torch.manual_seed(seed)
    model = open_clip.create_model(TINY)
    tokenizer = open_clip.get_tokenizer(TINY)
    cfg = model.visual.preprocess_cfg
    started = time.perf_counter()
    samples = [sample(seed * 10_000_000 + i) for i in range(train_size)]
    pixels = _pixels([s.image for s in samples], cfg["mean"], cfg["std"])
    tokens = tokenizer([s.captions["en"] for s in samples])
    del samples
    print(f"generated {train_size} training scenes in {time.perf_counter() - started:.0f}s", flush=True)

    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    steps_per_epoch = train_size // batch_size
    total = steps_per_epoch * epochs
    generator = torch.Generator().manual_seed(seed)
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(train_size, generator=generator)
        for i in range(steps_per_epoch):
            index = order[i * batch_size : (i + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * _schedule(step, total, warmup=total // 20)
            image_features, text_features, logit_scale = model(pixels[index], tokens[index])
            loss = loss_fn(image_features, text_features, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            if step % 25 == 0:
                print(f"clip step {step}/{total} loss {loss.item():.3f} ({time.perf_counter() - started:.0f}s)",
                      flush=True)
        print(f"clip epoch {epoch + 1}/{epochs} loss {loss.item():.3f} ({time.perf_counter() - started:.0f}s)",
              flush=True)
    return model.eval()


def _all_attributes() -> list[Attributes]:
    scenes = []
    for shape, colour, count, layout, background, texture, unsafe, watermark in itertools.product(
        SHAPES, COLOURS, range(1, MAX_COUNT + 1), LAYOUTS, COLOURS, TEXTURES, (False, True), (False, True)
    ):
        if background != colour and (count > 1 or layout == "row"):
            scenes.append(Attributes(shape, colour, count, layout, background, texture, unsafe, watermark))
    return scenes


def _student_tokenizer(folder: Path, scenes: list[Attributes]):
    """A WordPiece vocabulary of every caption word plus single characters (so unseen words still encode)."""
    from transformers import DistilBertTokenizerFast

    words = {w.lower() for a in scenes for lang in LANGUAGES for w in caption(a, lang).split()}
    letters = sorted({ch for w in words for ch in w})
    vocab = SPECIAL_TOKENS + sorted(words) + [c for c in letters if c not in words] + [f"##{c}" for c in letters]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return DistilBertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, strip_accents=False,
                                   model_max_length=48)


def train_student(teacher, seed: int, steps: int, batch_size: int, lr: float):
    import open_clip
    from transformers import DistilBertConfig, DistilBertModel

    from laion_hf.models.multilingual import Dense, MultilingualTextEncoder

    torch.manual_seed(seed)
    scenes = _all_attributes()
    tokenizer = _student_tokenizer(TINY_MULTILINGUAL, scenes)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=256,
                              max_position_embeddings=48, dropout=0.0, attention_dropout=0.0)
    embed_dim = teacher.text_projection.shape[1]
    student = MultilingualTextEncoder(
        DistilBertModel(config), tokenizer, "mean",
        [Dense(config.dim, embed_dim, bias=True, activation="torch.nn.modules.linear.Identity")], max_length=48,
    )
    clip_tokenizer = open_clip.get_tokenizer(TINY)
    started = time.perf_counter()
    with torch.no_grad():
        targets = torch.cat([
            teacher.encode_text(clip_tokenizer([caption(a, "en") for a in scenes[i : i + 2048]]))
            for i in range(0, len(scenes), 2048)
        ])
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    student.train()
    for step in range(steps):
        # Every caption language for the same scenes: the student learns that translations coincide.
        chunk = [(i, lang) for i in rng.sample(range(len(scenes)), batch_size // len(LANGUAGES)) for lang in LANGUAGES]
        for group in optimizer.param_groups:
            group["lr"] = lr * _schedule(step, steps, warmup=steps // 20)
        tokens = student.tokenize([caption(scenes[i], lang) for i, lang in chunk])
        output = student(tokens["input_ids"], tokens["attention_mask"])
        loss = torch.nn.functional.mse_loss(output, targets[[i for i, _ in chunk]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"student step {step + 1}/{steps} mse {loss.item():.4f} ({time.perf_counter() - started:.0f}s)",
                  flush=True)
    return student.eval()


# --- measurement ----------------------------------------------------------------------------------


def _split(seeds) -> list:
    return [sample(s) for s in seeds]


@torch.no_grad()
def _embed(model, student, samples, language: str):
    """Image embeddings, matched and mismatched caption embeddings (all L2-normalised)."""
    import open_clip

    cfg = model.visual.preprocess_cfg
    images = torch.nn.functional.normalize(model.encode_image(_pixels([s.image for s in samples], cfg["mean"],
                                                                      cfg["std"])), dim=-1)
    matched = [s.captions[language] for s in samples]
    mismatched = [mismatched_caption(s.attributes, language, seed=s.seed) for s in samples]
    if language == "en":
        tokenizer = open_clip.get_tokenizer(TINY)

        def encode(texts):
            return model.encode_text(tokenizer(texts))
    else:
        encode = student.encode
    return (images, torch.nn.functional.normalize(encode(matched), dim=-1),
            torch.nn.functional.normalize(encode(mismatched), dim=-1), matched)


def _recall_at_1(images, texts, captions: list[str]) -> float:
    """Image->text R@1 over the split; a hit is a retrieved caption identical to the image's own."""
    best = (images @ texts.T).argmax(dim=1).tolist()
    return sum(captions[j] == captions[i] for i, j in enumerate(best)) / len(captions)


def _pair_scores(images, matched, mismatched) -> tuple[np.ndarray, np.ndarray]:
    return (images * matched).sum(-1).numpy(), (images * mismatched).sum(-1).numpy()


def _calibrate(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy (recall of matched + rejection of mismatched)."""
    candidates = np.unique(np.concatenate([positives, negatives]))
    best = max(candidates, key=lambda t: (positives >= t).mean() + (negatives < t).mean())
    return round(float(best), 4)


def _precision_recall(positives: np.ndarray, negatives: np.ndarray, threshold: float) -> dict[str, float]:
    true_kept = int((positives >= threshold).sum())
    false_kept = int((negatives >= threshold).sum())
    return {
        "precision": round(true_kept / max(1, true_kept + false_kept), 4),
        "recall": round(true_kept / len(positives), 4),
    }


def measure(model, student) -> dict:
    calibration, test = _split(CALIBRATION_SEEDS), _split(TEST_SEEDS)
    report: dict = {"retrieval_r1": {}, "filter": {}}
    scores = {}
    for language in LANGUAGES:
        for name, split in (("calibration", calibration), ("test", test)):
            images, matched, mismatched, captions = _embed(model, student, split, language)
            scores[language, name] = _pair_scores(images, matched, mismatched)
            if name == "test":
                report["retrieval_r1"][language] = round(_recall_at_1(images, matched, captions), 4)
    other = [lang for lang in LANGUAGES if lang != "en"]
    threshold = _calibrate(*scores["en", "calibration"])
    multilingual_threshold = _calibrate(
        np.concatenate([scores[lang, "calibration"][0] for lang in other]),
        np.concatenate([scores[lang, "calibration"][1] for lang in other]),
    )
    for language in LANGUAGES:
        t = threshold if language == "en" else multilingual_threshold
        report["filter"][language] = _precision_recall(*scores[language, "test"], t)
    # What happens without the student: non-English captions through the English tower.
    images, matched, mismatched, _ = _embed(model, student, test, "en")
    tokenizer = __import__("open_clip").get_tokenizer(TINY)
    with torch.no_grad():
        german = torch.nn.functional.normalize(model.encode_text(tokenizer([s.captions["de"] for s in test])), dim=-1)
    report["filter"]["de_via_english_tower"] = _precision_recall(
        (images * german).sum(-1).numpy(), scores["de", "test"][1], threshold
    )
    report["threshold"] = threshold
    report["multilingual_threshold"] = multilingual_threshold
    report["splits"] = {
        "calibration_seeds": [CALIBRATION_SEEDS.start, CALIBRATION_SEEDS.stop],
        "test_seeds": [TEST_SEEDS.start, TEST_SEEDS.stop],
        "negatives": "one mismatched caption per image (other shape, colour and background)",
    }
    return report


def save(model, student, report: dict, args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    TINY_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(TINY_WEIGHTS))
    student.save_pretrained(TINY_MULTILINGUAL)
    report["training"] = {k: v for k, v in vars(args).items()}
    report["sha256"] = {TINY_WEIGHTS.name: sha256_file(TINY_WEIGHTS)}
    TINY_QUALITY.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=16_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--student-steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--student-only", action="store_true",
                        help="distil and measure a new student for the shipped CLIP weights (skip CLIP training)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    register_tiny_config()
    if args.student_only:
        from laion_hf.models.clip import load_clip

        model = load_clip(TINY).model
    else:
        model = train_clip(args.seed, args.train_size, args.epochs, args.batch_size, args.lr)
        # The student is distilled from the fp16 weights that ship, so it matches what users load.
        model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    student = train_student(model, args.seed, args.student_steps, args.batch_size, lr=2e-3)
    report = measure(model, student)
    save(model, student, report, args)
    print(json.dumps({k: report[k] for k in ("retrieval_r1", "filter", "threshold", "multilingual_threshold")},
                     indent=2))


if __name__ == "__main__":
    main()
