"""``laion-hf index``, ``laion-hf search``, ``laion-hf serve``: search what you built (see :mod:`laion_hf.search`)."""

from __future__ import annotations

import json
import re
import sys

import typer
from rich.table import Table

from laion_hf.cli.app import app, console
from laion_hf.core.errors import UserError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``16GB``, ``512M``, ``1.5G`` or a plain byte count -> bytes (binary units, as autofaiss reads them)."""
    match = _SIZE.match(text)
    if not match:
        raise UserError(f"--max-memory {text!r}: expected a size like 16GB, 512MB or a byte count")
    number, unit = match.groups()
    return int(float(number) * 1024 ** " KMGT".index(unit.upper() or " "))


@app.command("index")
def index_command(
    embeddings: str = typer.Argument(..., help="A clip-retrieval folder (img_emb/, text_emb/, metadata/) as laion-hf filter writes it, or a build output holding one per config."),
    output: str = typer.Argument(..., help="Index folder to write (image.index, text.index, metadata.arrow, index_info.json)."),
    config: str = typer.Option(None, "--config", help="Which config's embeddings, when EMBEDDINGS holds several."),
    model: str = typer.Option(None, "--model", help="The CLIP that computed the embeddings (required unless embedding_model.json says)."),
    pretrained: str = typer.Option(None, "--pretrained", help="Its pretrained tag or weights file, recorded for queries."),
    max_memory: str = typer.Option("16GB", "--max-memory", help="Size budget of each index; picks the codes (fp16, 8-bit, PQ)."),
    factory: str = typer.Option(None, "--factory", help="A faiss factory string instead of the size-based choice."),
    target_recall: float = typer.Option(0.95, "--target-recall", min=0.0, max=1.0, help="Recall@10 the search parameters are tuned to."),
    threads: int = typer.Option(None, "--threads", min=1, help="faiss threads (default: all cores)."),
) -> None:
    """Build a kNN index over one config's image (and caption) embeddings, with its recall@10 measured."""
    from laion_hf.search.index import build_index

    info = build_index(embeddings, output, config=config, model=model, pretrained=pretrained,
                       max_memory=parse_size(max_memory), factory=factory, target_recall=target_recall,
                       threads=threads)
    table = Table(title=f"index {info.config}: {info.rows:,} rows, dim {info.dimension}, model {info.model['name']}")
    for column in ("index", "factory", "search", "recall@10", "seconds", "MB"):
        table.add_column(column, justify="left" if column in ("index", "factory", "search") else "right")
    for modality, entry in info.indices.items():
        table.add_row(modality, entry.factory, entry.search_params or "exact", f"{entry.recall_at_10:.3f}",
                      f"{entry.build_seconds:.1f}", f"{entry.bytes / 1e6:.1f}")
    console.print(table)
    low = [m for m, e in info.indices.items() if e.recall_at_10 < target_recall]
    if low:
        console.print(f"[yellow]warning:[/] recall@10 below {target_recall} for {', '.join(low)}: "
                      "the codes lose too much at this --max-memory; give it more memory")
    console.print(f"-> {output}")


def _print_results(results: list[dict], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(results, ensure_ascii=False, indent=1) + "\n")
        return
    table = Table()
    for column in ("#", "score", "key", "caption", "punsafe", "url"):
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(results, 1):
        punsafe = row.get("punsafe")
        table.add_row(str(rank), f"{row['score']:.3f}", row.get("key") or "-", row.get("caption") or "",
                      "-" if punsafe is None else f"{punsafe:.2f}", row.get("url") or "")
    console.print(table)


@app.command("search")
def search_command(
    index: str = typer.Argument(..., help="Index folder, or hf://datasets/ORG/NAME[@REV]/PATH of one pushed with a dataset."),
    text: str = typer.Argument(None, help="Text query (or use --image)."),
    image: str = typer.Option(None, "--image", help="Query by this image file instead of a text."),
    k: int = typer.Option(20, "--k", min=1, help="Results to return."),
    modality: str = typer.Option("image", "--modality", help="Search the 'image' or the 'text' (caption) embeddings."),
    max_punsafe: float = typer.Option(None, "--max-punsafe", help="Only rows with punsafe <= this."),
    language: str = typer.Option(None, "--language", help="Only rows of this language code."),
    min_aesthetic: float = typer.Option(None, "--min-aesthetic", help="Only rows with aesthetic >= this."),
    multilingual: bool = typer.Option(False, "--multilingual", help="Embed the text with the model's multilingual encoder."),
    model: str = typer.Option(None, "--model", help="Refused unless it is the model the index records."),
    pretrained: str = typer.Option(None, "--pretrained", help="Weights file or tag, when the recorded one is not on this machine."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Find the rows nearest to a text or an image, embedded with the index's own model."""
    from laion_hf.search.hub import local_index_folder
    from laion_hf.search.index import KnnIndex
    from laion_hf.search.query import Filters, QueryError, Searcher, read_query_image

    if (text is None) == (image is None):
        raise QueryError("give either a text query or --image FILE" if text is None else "give a text query or --image, not both")
    searcher = Searcher(KnnIndex(local_index_folder(index)), model=model, pretrained=pretrained)
    filters = Filters(max_punsafe=max_punsafe, language=language, min_aesthetic=min_aesthetic)
    filters.check(searcher.index)
    vector = (searcher.embed_image(read_query_image(image), image) if image is not None
              else searcher.embed_text(text, multilingual=multilingual))
    _print_results(searcher.search(vector, k, modality=modality, filters=filters), as_json)


@app.command("serve")
def serve_command(
    indices: list[str] = typer.Argument(..., help="One or more index folders (or hf:// addresses); the page can switch between them."),
    port: int = typer.Option(1234, "--port", help="TCP port (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; loopback unless you mean to share it."),
    safe_limit: float = typer.Option(0.45, "--safe-limit", help="Safe mode hides rows with punsafe above this (Re-LAION research-safe's cut)."),
    images: str = typer.Option(None, "--images", help="Folder of the image tars to show thumbnails from (default: the one the index records)."),
) -> None:
    """Serve a local search page and a knn-service style JSON API over the given indices."""
    from laion_hf.search.server import SearchServer

    server = SearchServer(indices, host=host, port=port, safe_limit=safe_limit, images=images)
    try:
        for searcher in server.searchers.values():
            searcher.load_model()  # the first query is then fast, and a model mismatch stops here
    except BaseException:
        server.stop()
        raise
    with server:
        if host not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach it can search these indices")
        console.print(f"search page: {server.url}  (Ctrl-C to stop)")
        try:
            server.wait()
        except KeyboardInterrupt:
            console.print("stopped")
