"""Stream a laion-hf dataset from the Hub into a torch training loop, checkpoint mid-epoch, resume.

    # against the Hub (or any HF_ENDPOINT), 2 workers, this process as rank 0 of 1:
    python examples/train_stream.py --repo ORG/NAME --config research-safe --steps 100 --checkpoint ckpt.pt

    # self-contained: start the loopback Hub, publish a generated sample, train 4 steps, resume, compare:
    python examples/train_stream.py --demo

    # the same shards through the plain `webdataset` library:
    python examples/train_stream.py --demo --webdataset

Under torchrun, RANK and WORLD_SIZE pick this process's part (split_dataset_by_node).
The model is a linear probe on CLIP-preprocessed pixels: the point is the data path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import torch

from laion_hf.hub.load import clip_preprocess, training_loader, webdataset_urls


def train(args, loader, model, optimizer, start_step: int = 0) -> list[str]:
    """Run until ``args.steps``; returns the sample keys seen (to show resumption is exact)."""
    seen = []
    step = start_step
    for batch in loader:
        features = batch["pixel_values"].mean(dim=(2, 3))
        loss = model(features).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.extend(batch["key"])
        step += 1
        print(f"step {step} loss {loss.item():.4f} keys {batch['key'][0]}..{batch['key'][-1]}")
        if args.checkpoint and step == args.checkpoint_at:
            torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "loader": loader.state_dict()}, args.checkpoint)
            print(f"checkpoint at step {step}: {args.checkpoint}")
        if step == args.steps:
            break
    return seen


def make_loader(args):
    return training_loader(
        args.repo, args.config, batch_size=args.batch_size, num_workers=args.workers, image_size=args.image_size,
        rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def run_webdataset(args) -> None:
    """The same shards through webdataset: HTTP URLs streamed with curl, decoded to PIL, CLIP-preprocessed.

    LAION shards mix ``.jpg``, ``.png`` and ``.webp`` samples: ``"jpg;png;webp"``
    takes whichever a sample has, and EXIF orientation is applied as ``datasets`` does.
    """
    import webdataset as wds
    from PIL import ImageOps

    preprocess = clip_preprocess(args.image_size)
    urls = webdataset_urls(args.repo, args.config)
    pipeline = (
        wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker)
        .decode("pil")
        .to_tuple("jpg;png;webp", "txt", "__key__")
        .map_tuple(lambda image: preprocess(ImageOps.exif_transpose(image)), lambda caption: caption, lambda key: key)
        .batched(args.batch_size)
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=args.workers)
    count = 0
    for pixels, captions, keys in loader:
        count += len(keys)
    print(f"webdataset: {count} samples from {len(urls)} shards, batch shape {tuple(pixels.shape)}")


@contextlib.contextmanager
def demo_repo(args):
    """Loopback Hub with a generated sample dataset published as ``laion-hf/demo`` (config ``demo``)."""
    from laion_hf.demo import generate_sample_copy
    from laion_hf.hub.publish import publish_folder
    from laion_hf.hub.push import push_folder
    from laion_hf.testing.hub_server import HubServer

    with tempfile.TemporaryDirectory() as tmp, HubServer(Path(tmp) / "hub") as hub, hub.environment():
        copy = generate_sample_copy(Path(tmp) / "copy", rows_per_shard=100, download_shards=4)
        publish_folder({"demo": str(copy.download_dir)}, Path(tmp) / "folder", family="laion5b", target_shard_bytes=1)
        push_folder(Path(tmp) / "folder", "laion-hf/demo", token=hub.token)
        os.environ["HF_TOKEN"] = hub.token
        args.repo, args.config = "laion-hf/demo", "demo"
        args.checkpoint = args.checkpoint or str(Path(tmp) / "ckpt.pt")
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo")
    parser.add_argument("--config")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--checkpoint", help="where to save the checkpoint")
    parser.add_argument("--checkpoint-at", type=int, default=2, help="step at which to checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--demo", action="store_true", help="self-contained run against a loopback Hub")
    parser.add_argument("--webdataset", action="store_true", help="read the shards with the webdataset library instead")
    args = parser.parse_args()
    if not args.demo and not args.repo:
        parser.error("give --repo (and --config) or --demo")

    with demo_repo(args) if args.demo else contextlib.nullcontext():
        if args.webdataset:
            run_webdataset(args)
            return
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader, start = make_loader(args), 0
        if args.resume:
            state = torch.load(args.checkpoint, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            loader.load_state_dict(state["loader"])
            start = state["step"]
        seen = train(args, loader, model, optimizer, start)
        if args.demo:
            # Resume from the mid-run checkpoint and check the same samples follow.
            loader = make_loader(args)
            state = torch.load(args.checkpoint, weights_only=False)
            loader.load_state_dict(state["loader"])
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            args.checkpoint = None
            resumed = train(args, loader, model, optimizer, state["step"])
            expected = seen[state["step"] * args.batch_size :]
            assert resumed == expected, "resumed run must continue exactly where the checkpoint was taken"
            print(f"resumed from step {state['step']}: the same {len(resumed)} samples followed")


if __name__ == "__main__":
    main()
