"""``make demo``: the whole chain on a synthetic crawl, with nothing downloaded from the internet.

1. a loopback image server serves scenes of the synthetic domain
   (:mod:`laion_hf.testing.synthetic`), and WAT files in Common Crawl's layout
   (:mod:`laion_hf.testing.wat`) link to them. Planted among the good pairs:
   mismatched captions, watermarks, the unsafe motif, a keyword, duplicates
   (the same link on two pages, the same image under two links), broken links
   (404, corrupt bytes, too small), ``X-Robots-Tag: noai`` opt-outs, links the
   extractor must reject (SVG, ``data:``, short or missing alt), one
   "reported" link that a removal list names, and images on other hosts that
   opt out (robots.txt, tdmrep.json, ``tdm-reservation``, ``noml``) or answer
   429 with ``Retry-After`` first (:mod:`laion_hf.demo.sites`);
2. ``build --recipe demo`` turns the crawl into the research and
   research-safe configs (:mod:`laion_hf.build`);
3. the Hub folder is pushed to a loopback Hub-compatible server and streamed
   back with ``datasets.load_dataset(..., streaming=True)``;
4. the research config's kNN index is opened from the Hub
   (``hf://datasets/REPO/index/research``) and searched for
   :data:`SEARCH_QUERY`; each result's scene is looked up in the synthetic
   ground truth (an image's link names the scene it shows).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from laion_hf.build import Build, BuildOptions, BuildReport
from laion_hf.core.hashing import hex_digest
from laion_hf.demo.sites import CONSENT_CASES, DemoSites
from laion_hf.recipes import load_recipe
from laion_hf.testing.image_server import ImageServer
from laion_hf.testing.synthetic import LANGUAGES, mismatched_caption, sample
from laion_hf.testing.wat import Image, Page, write_wat

DEMO_REPO = "laion-hf/demo"
KEYWORD = "forbiddenword"  # listed in laion_hf/recipes/demo-keywords.txt
IMAGE_SIZE = 160  # with full-quality JPEG, most scenes are above LAION's 5 KB floor (plain ones are not)
CC_LICENSE = "https://creativecommons.org/licenses/by/4.0/"

#: Planted cases: every n-th image link of the crawl is this case (the first rule that divides wins).
CASES: tuple[tuple[int, str], ...] = (
    (43, "robots-txt"),
    (47, "tdmrep"),
    (53, "tdm-header"),
    (59, "noml"),
    (61, "busy-host"),
    (41, "noai"),
    (37, "corrupt"),
    (31, "missing"),
    (29, "too-small"),
    (23, "same-image-other-link"),
    (19, "same-link-again"),
    (17, "keyword"),
    (13, "watermark"),
    (11, "unsafe"),
    (7, "mismatched"),
)


def case_of(index: int) -> str:
    return next((case for n, case in CASES if index % n == n - 1), "good")


@dataclass
class DemoCrawl:
    """The generated crawl: WAT files, the removal list, and how many of each case were planted."""

    wat_files: list[str]
    removal_list: str
    planted: Counter[str] = field(default_factory=Counter)


def _jpeg(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


class _Links:
    """Makes the crawl's ``<img>`` links one by one: scenes served by the image server, or planted cases."""

    def __init__(self, server: ImageServer, sites: DemoSites | None = None) -> None:
        self.server = server
        self.sites = sites
        self.served: list[tuple[Image, bytes]] = []  # good links, for the duplicate cases
        self.planted: Counter[str] = Counter()

    def _serve(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> str:
        return self.server.image(path, data, headers=headers)

    def link(self, index: int) -> Image:
        case = case_of(index)
        if (case in ("same-link-again", "same-image-other-link") and not self.served) or (case in CONSENT_CASES and not self.sites):
            case = "good"
        self.planted[case] += 1
        if case == "same-link-again":
            return self.served[index // 3 % len(self.served)][0]
        if case == "same-image-other-link":
            original, data = self.served[index // 5 % len(self.served)]
            return Image(self._serve(f"/copy/{index}.jpg", data), original.alt)
        scene = sample(index, size=IMAGE_SIZE, unsafe=case == "unsafe", watermark=case == "watermark", p_overlay=0.0)
        language = LANGUAGES[index % len(LANGUAGES)]
        alt = scene.captions[language]
        if case == "mismatched":
            alt = mismatched_caption(scene.attributes, language, seed=index)
        elif case == "keyword":
            alt = f"{alt} {KEYWORD}"
        path = f"/img/{index}.jpg"
        data = _jpeg(scene.image)
        if case == "missing":
            return Image(self.server.missing(path), alt)
        if case == "corrupt":
            return Image(self.server.corrupt(path), alt)
        if case == "too-small":
            return Image(self._serve(path, sample(index, size=16).encode(quality=30)), alt)
        if case == "noai":
            return Image(self.server.no_ai(path, data), alt)
        if case in CONSENT_CASES:
            return Image(self.sites.serve(case, index, data), alt)
        image = Image(self._serve(path, data), alt)
        if case == "good":
            self.served.append((image, data))
        return image


def generate_crawl(directory: Path, server: ImageServer, *, files: int = 3, pages_per_file: int = 12, images_per_page: int = 5,
                   sites: DemoSites | None = None) -> DemoCrawl:
    """Write ``files`` WAT files of synthetic pages whose images ``server`` (and ``sites``) serve; deterministic."""
    directory.mkdir(parents=True, exist_ok=True)
    links = _Links(server, sites)
    index = 0
    wat_files = []
    for f in range(files):
        pages = []
        for p in range(pages_per_file):
            images = []
            for _ in range(images_per_page):
                images.append(links.link(index))
                index += 1
            if p == 0:  # what the extractor must reject, once per file
                images += [
                    Image(server.url(f"/logo-{f}.svg"), "the site logo in vector form"),
                    Image("data:image/png;base64,iVBORw0KGgo=", "an inline pixel image"),
                    Image(server.url(f"/icon-{f}.jpg"), "ab"),
                    Image(server.url(f"/spacer-{f}.jpg"), None),
                ]
                links.planted["rejected-by-extract"] += 4
            anchors = [("A@/href", CC_LICENSE, "CC BY 4.0")] if p % 3 == 0 else []
            pages.append(Page(url=f"https://shop{f}.example.com/page/{p}.html", images=images, links=anchors, title=f"Page {p}"))
        path = directory / f"CC-DEMO-{f:05d}.warc.wat.gz"
        write_wat(str(path), pages)
        wat_files.append(str(path))
    # A link "reported" after the crawl: the removal list names it by the md5 of its URL.
    reported = max(links.served[:10], key=lambda served: len(served[1]))[0].src  # large enough to be downloaded
    removal_list = directory / "reported-links.url-md5.txt"
    removal_list.write_text(hex_digest("md5", reported.encode("utf-8")) + "\n")
    links.planted["reported"] += 1
    return DemoCrawl(wat_files=wat_files, removal_list=str(removal_list), planted=links.planted)


SEARCH_QUERY = "a red circle on a green background"
SEARCH_CONFIG = "research"


@dataclass
class DemoResult:
    """What the demo produced and what came back from the (loopback) Hub."""

    crawl: DemoCrawl
    report: BuildReport
    repo_id: str
    streamed: dict[str, int]
    first_rows: dict[str, dict]
    search: list[dict[str, Any]] = field(default_factory=list)  # results of SEARCH_QUERY, with each scene's truth


def scene_of(url: str) -> tuple[str, str, str] | None:
    """(colour, shape, background) of the scene an image link of the crawl shows; None for links that are not scenes."""
    name = url.rsplit("/", 1)[-1]
    if "/img/" not in url or not name.removesuffix(".jpg").isdigit():
        return None
    attributes = sample(int(name.removesuffix(".jpg")), size=IMAGE_SIZE).attributes
    return attributes.colour, attributes.shape, attributes.background


def search_back(repo_id: str, config: str, query: str, k: int = 5) -> list[dict[str, Any]]:
    """The top ``k`` of ``query`` in the config's index as pushed next to the dataset, each with its true scene."""
    from laion_hf.search.hub import download_index
    from laion_hf.search.index import KnnIndex
    from laion_hf.search.query import Searcher

    searcher = Searcher(KnnIndex(download_index(f"hf://datasets/{repo_id}/index/{config}")))
    results = searcher.search(searcher.embed_text(query), k=k)
    return [{**row, "truth": scene_of(row["url"])} for row in results]


@contextlib.contextmanager
def _hf_caches(directory: Path) -> Iterator[None]:
    """Keep the demo's Hugging Face caches inside its output, restored afterwards."""
    names = {"HF_HUB_CACHE": directory / "hub", "HF_DATASETS_CACHE": directory / "datasets"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(path) for name, path in names.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stream_back(repo_id: str, configs: list[str]) -> tuple[dict[str, int], dict[str, dict]]:
    """Rows per config as ``load_dataset(repo_id, config, streaming=True)`` yields them, and each first row."""
    from datasets import load_dataset

    counts, first = {}, {}
    for config in configs:
        dataset = load_dataset(repo_id, config, split="train", streaming=True)
        counts[config] = 0
        for row in dataset:
            if counts[config] == 0:
                first[config] = row
            counts[config] += 1
    return counts, first


def run_demo(
    output: Path,
    *,
    workers: int = 2,
    runner: str = "local",
    on_build: Callable[[BuildReport], None] | None = None,
    show_progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> DemoResult:
    """Generate the crawl, build it with the demo recipe, push to a loopback Hub and stream it back.

    ``overrides`` change the demo recipe as ``--set`` does (``{"steps.score": False}``).
    """
    from huggingface_hub.utils import disable_progress_bars

    from laion_hf.hub.push import push_folder
    from laion_hf.testing.hub_server import HubServer

    output = Path(output)
    with ImageServer() as images, DemoSites() as sites:
        crawl = generate_crawl(output / "crawl", images, sites=sites)
        options = BuildOptions(
            inputs=crawl.wat_files,
            output=str(output / "build"),
            runner=runner,
            workers=workers,
            removals=(("url-md5", crawl.removal_list),),
            allow_private_network=True,  # the image server is on loopback
            repo_id=DEMO_REPO,
            show_progress=show_progress,
        )
        report = Build(load_recipe("demo", overrides), options).run()
    if on_build is not None:
        on_build(report)
    # The demo's files are small: per-file upload bars would only bury the stage table.
    disable_progress_bars()
    with HubServer(output / "hub-server") as hub, hub.environment(), _hf_caches(output / "hf-cache"):
        push_folder(report.hub_folder, DEMO_REPO, token=hub.token)
        streamed, first_rows = stream_back(DEMO_REPO, list(report.configs))
        search = search_back(DEMO_REPO, SEARCH_CONFIG, SEARCH_QUERY)
    return DemoResult(crawl=crawl, report=report, repo_id=DEMO_REPO, streamed=streamed, first_rows=first_rows,
                      search=search)
