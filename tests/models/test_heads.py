"""LAION's heads as torch modules, and loading each published checkpoint format from a file the test writes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from laion_hf.models.checkpoints import ModelLoadError
from laion_hf.models.heads import (
    NSFW_B32,
    NSFW_L14,
    AestheticV1,
    AestheticV2,
    CheckpointError,
    NsfwDetector,
    WatermarkDetector,
    load_aesthetic_v1,
    load_aesthetic_v2,
    load_head,
    load_watermark,
    published_checkpoint,
    save_head,
    watermark_pixels,
)


def _unit(n: int, dim: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("config", [NSFW_L14, NSFW_B32, {"embed_dim": 64, "hidden": (32, 16)}])
def test_nsfw_detector_shapes_and_range(config):
    detector = NsfwDetector(**config).eval()
    widths = [config["embed_dim"], *config["hidden"], 1]
    assert [(m.in_features, m.out_features) for m in [*detector.dense, detector.output]] == list(
        zip(widths[:-1], widths[1:])
    )
    punsafe = detector(_unit(5, config["embed_dim"]))
    assert punsafe.shape == (5,)
    assert ((punsafe > 0) & (punsafe < 1)).all()


def test_nsfw_normalisation_is_keras_normalization():
    """(x - mean) / max(sqrt(variance), 1e-7): a zero-variance column does not blow up to inf."""
    detector = NsfwDetector(embed_dim=2, hidden=())
    with torch.no_grad():
        detector.mean.copy_(torch.tensor([1.0, 0.0]))
        detector.variance.copy_(torch.tensor([4.0, 0.0]))
        detector.output.weight.copy_(torch.tensor([[1.0, 1e-7]]))
        detector.output.bias.zero_()
    logit = detector.logits(torch.tensor([[3.0, 2.0]]))
    assert logit.item() == pytest.approx((3 - 1) / 2 + 2.0)


def test_aesthetic_v1_loads_a_linear_state_dict(tmp_path):
    """sa_0_4_vit_l_14_linear.pth is the state dict of torch.nn.Linear(768, 1)."""
    published = nn.Linear(768, 1)
    path = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(published.state_dict(), path)
    head = load_aesthetic_v1(path)
    assert isinstance(head, AestheticV1) and head.in_features == 768
    x = _unit(4, 768)
    torch.testing.assert_close(head(x), published(x).squeeze(-1))


class _PublishedMLP(nn.Module):
    """improved-aesthetic-predictor's MLP as its training script defines it (a LightningModule there)."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def test_aesthetic_v2_loads_the_published_mlp_state_dict(tmp_path):
    published = _PublishedMLP(768).eval()
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(published.state_dict(), path)
    head = load_aesthetic_v2(path)
    assert isinstance(head, AestheticV2) and head.widths == (1024, 128, 64, 16)
    x = _unit(4, 768)
    with torch.no_grad():
        torch.testing.assert_close(head(x), published(x).squeeze(-1))


def test_watermark_loads_laions_efficientnet_state_dict(tmp_path):
    """watermark_model_v1.pt: timm efficientnet_b3a whose classifier LAION replaced by 1536->625->256->2."""
    from laion_hf.models.torch_compat import import_torchvision

    import_torchvision()
    import timm

    published = timm.create_model("efficientnet_b3a", pretrained=False, num_classes=2)
    published.classifier = nn.Sequential(
        nn.Linear(in_features=1536, out_features=625),
        nn.ReLU(),
        nn.Dropout(p=0.3),
        nn.Linear(in_features=625, out_features=256),
        nn.ReLU(),
        nn.Linear(in_features=256, out_features=2),
    )
    published.eval()
    path = tmp_path / "watermark_model_v1.pt"
    torch.save(published.state_dict(), path)
    detector = load_watermark(path)
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # any size; 64 keeps it fast
    with torch.no_grad():
        expected = torch.softmax(published(pixels), dim=1)[:, 0]
        torch.testing.assert_close(detector.pwatermark(pixels), expected)


def test_watermark_preprocess_matches_laions_transform():
    """Resize((256, 256)) + ToTensor + ImageNet Normalize, as in LAION-5B-WatermarkDetection."""
    from PIL import Image

    from laion_hf.models.torch_compat import import_torchvision

    transforms = import_torchvision().transforms
    laion = transforms.Compose(
        [
            transforms.Resize((256, 256)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    image = Image.effect_mandelbrot((300, 200), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    torch.testing.assert_close(watermark_pixels([image], 256)[0], laion(image), atol=1e-5, rtol=0)


def test_tiny_heads_round_trip_through_safetensors(tmp_path):
    heads = {
        "nsfw": (NsfwDetector(embed_dim=64, hidden=(32, 16)), {"embed_dim": 64, "hidden": [32, 16]}),
        "aesthetic": (AestheticV2(64, (64, 32, 16, 8)), {"embed_dim": 64, "widths": [64, 32, 16, 8]}),
    }
    x = _unit(3, 64)
    for name, (head, config) in heads.items():
        head.eval()
        path = tmp_path / f"{name}.safetensors"
        save_head(head, config, path)
        loaded = load_head(path)
        assert type(loaded) is type(head)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), head(x))


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "not_aesthetic.pth"
    torch.save({"something": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not_aesthetic.pth.*layers.0.weight"):
        load_aesthetic_v2(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="garbage.pth: not a readable torch state dict"):
        load_aesthetic_v1(garbage)
    with pytest.raises(ModelLoadError, match="garbage.pth: not a readable laion-hf head checkpoint"):
        load_head(garbage)


def test_shipped_tiny_heads_load_and_were_trained_on_the_shipped_clip():
    """Retraining the tiny CLIP without its embedding heads would silently garble punsafe / aesthetic."""
    import json

    from laion_hf.models.clip import TINY_WEIGHTS, sha256_file
    from laion_hf.testing.train_heads import AESTHETIC_PATH, NSFW_PATH, QUALITY_PATH, WATERMARK_PATH

    quality = json.loads(QUALITY_PATH.read_text(encoding="utf-8"))
    clip_sha = sha256_file(TINY_WEIGHTS)
    for kind in ("nsfw", "aesthetic"):
        assert quality[kind]["clip_sha256"] == clip_sha, f"retrain: python -m laion_hf.testing.train_heads --heads {kind}"
    assert isinstance(load_head(NSFW_PATH), NsfwDetector) and load_head(NSFW_PATH).embed_dim == 64
    assert isinstance(load_head(AESTHETIC_PATH), AestheticV2)
    watermark = load_head(WATERMARK_PATH)
    assert isinstance(watermark, WatermarkDetector)
    assert watermark.image_size == 64 and watermark.backbone == "test_efficientnet"


def test_published_checkpoints_are_found_under_laions_names_or_the_error_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LAION_HF_MODELS", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"sac\+logos\+ava1-l14-linearMSE.pth from "
                       r"github.com/christophschuhmann/improved-aesthetic-predictor into " + str(tmp_path)):
        published_checkpoint("aesthetic", "ViT-L-14")
    (tmp_path / "watermark_model_v1.pt").write_bytes(b"")
    assert published_checkpoint("watermark", "anything") == tmp_path / "watermark_model_v1.pt"
    with pytest.raises(CheckpointError, match="LAION published no nsfw head for laion-hf-tiny embeddings"):
        published_checkpoint("nsfw", "laion-hf-tiny")
