"""Label maps that went through JPEG or noise, before / after the colour-tolerance palette.

    PYTHONPATH=. .venv/bin/python benchmarks/label_snapping.py    # -> docs/label_snapping.png, .md
    python -m benchmarks.label_snapping --markdown ''             # print only (and write the figure)

The inputs of the shipped label-map workflow (``workflows/midms_label_map_sd15.json``): the
condition label map ``workflows/inputs/midms_condition_labels.png`` (512 px, also the condition)
and the exemplar's ``midms_exemplar_labels.png``, compared with label_compare = "nearest
condition colour" on the 64 x 64 latent grid of a 512 px image (labels at each cell's centre
pixel). The condition map is given three ways: clean (as shipped), with uniform integer noise of
+-12 per channel (seeded), and through JPEG at quality 75 (PIL, its default 4:2:0 chroma
subsampling). The exemplar map stays clean.

* before: the old snapping (``condition_palette`` of the node until this change, reimplemented
  here): the palette is the condition map's 64 most frequent exact colours, and both maps'
  cells go to the nearest palette colour.
* after: :mod:`midms_core.exemplars.label_colours` as the node uses it (colour_tolerance 24): the
  condition map's colours clustered (:func:`cluster_palette`), condition cells to the nearest
  label, exemplar cells to the nearest label within the tolerance (else none).

Measured per condition cell: "no source" = no exemplar cell has its label (the source preview
is black there, the model generates it unguided); "as clean" = the exemplar cells it may match
are exactly those it may match with the clean map and the same method.
The figure: per row the condition map, then each cell in its label's colour where some exemplar
cell shares the label, black where none does, before and after.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from benchmarks.tables import Table
from midms_core.exemplars.label_colours import DEFAULT_TOLERANCE, cluster_palette, snap_colours
from midms_core.exemplars.regions import colour_labels, labels_on_grid

REPO = Path(__file__).resolve().parents[1]
INPUTS = REPO / "workflows" / "inputs"
GRID = (64, 64)
OLD_PALETTE = 64


def load(name: str) -> torch.Tensor:
    """A PNG of workflows/inputs as (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(Image.open(INPUTS / name).convert("RGB"))).float().div(255).permute(2, 0, 1)[None]


def noisy(image: torch.Tensor, amplitude: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return ((image * 255).round() + torch.randint(-amplitude, amplitude + 1, image.shape, generator=g)).clamp(0, 255) / 255


def jpeg(image: torch.Tensor, quality: int = 75) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).float().div(255).permute(2, 0, 1)[None]


def old_labels(condition: torch.Tensor, exemplar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The snapping before this change: palette = the condition map's 64 most frequent exact
    colours; every cell of both maps to its nearest palette colour. -> condition cell labels
    (h, w), exemplar cell labels (h, w), palette (K, 3)."""
    q = (condition[0].permute(1, 2, 0).reshape(-1, 3).clamp(0, 1) * 255).round().long()
    colours, counts = torch.unique(q, dim=0, return_counts=True)
    palette = colours[counts.argsort(descending=True)[:OLD_PALETTE]].float() / 255
    cond = labels_on_grid(colour_labels(condition, palette), GRID)[0, 0]
    exem = labels_on_grid(colour_labels(exemplar, palette), GRID)[0, 0]
    return cond, exem, palette


def new_labels(condition: torch.Tensor, exemplar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``host_adapters.encode.label_restriction`` in "nearest condition colour" mode."""
    palette = cluster_palette(condition, DEFAULT_TOLERANCE)
    cond = snap_colours(labels_on_grid(condition, GRID), palette)[0, 0]
    exem = snap_colours(labels_on_grid(exemplar, GRID), palette, DEFAULT_TOLERANCE)[0, 0]
    return cond, exem, palette


def lost_labels(clean: torch.Tensor, palette: torch.Tensor) -> list[int]:
    """Pixel counts of the clean map's colours that no palette colour lies within the tolerance of."""
    colours, counts = torch.unique((clean[0].flatten(1).t() * 255).round(), dim=0, return_counts=True)
    near = torch.cdist(colours, palette * 255).min(dim=1).values <= DEFAULT_TOLERANCE
    return sorted(counts[~near].tolist())


def border_cells(clean: torch.Tensor) -> torch.Tensor:
    """(h * w,) bool: condition cells next to (3 x 3) a cell of another label in the clean map."""
    cells = labels_on_grid(colour_labels(clean), GRID).double()
    spread = torch.nn.functional.max_pool2d(cells, 3, 1, 1) + torch.nn.functional.max_pool2d(-cells, 3, 1, 1)
    return (spread != 0).flatten()


def allowed(cond: torch.Tensor, exem: torch.Tensor) -> torch.Tensor:
    """(h, w) condition and exemplar cell labels -> (h * w, h * w) bool: which pairs may match."""
    return cond.flatten()[:, None] == exem.flatten()[None, :]


def picture(cond: torch.Tensor, exem: torch.Tensor, palette: torch.Tensor, size: int) -> Image.Image:
    """Each condition cell in its label's colour where some exemplar cell shares the label, black where none does."""
    served = torch.isin(cond, exem)
    rgb = palette[cond.clamp(min=0)] * served[..., None]
    return Image.fromarray((rgb * 255).round().byte().numpy()).resize((size, size), Image.NEAREST)


def figure(rows: list[tuple[str, torch.Tensor, dict]], exemplar: torch.Tensor, size: int = 256) -> Image.Image:
    pad, head = 8, 22
    columns = ["condition", "before", "after (tolerance 24)", "exemplar labels"]
    sheet = Image.new("RGB", (len(columns) * (size + pad) + pad, len(rows) * (size + head + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: the bitmap font
        font = ImageFont.load_default()

    def to_image(t: torch.Tensor) -> Image.Image:
        return Image.fromarray((t[0].permute(1, 2, 0) * 255).round().byte().numpy()).resize((size, size), Image.NEAREST)

    for r, (name, condition, results) in enumerate(rows):
        y = pad + r * (size + head + pad)
        tiles = [to_image(condition), results["before"]["picture"], results["after"]["picture"], to_image(exemplar)]
        texts = [name, f"no source {results['before']['no source']:.1%}", f"no source {results['after']['no source']:.1%}",
                 "clean, as shipped"]
        for c, (tile, text) in enumerate(zip(tiles, texts)):
            x = pad + c * (size + pad)
            draw.text((x, y + 3), f"{columns[c] + ': ' if r == 0 else ''}{text}", fill=(0, 0, 0), font=font)
            sheet.paste(tile, (x, y + head))
    return sheet


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "label_snapping.png")
    parser.add_argument("--markdown", default=str(REPO / "docs" / "label_snapping.md"), help="'' = print only")
    args = parser.parse_args(argv)
    clean = load("midms_condition_labels.png")
    exemplar = load("midms_exemplar_labels.png")
    variants = [("clean", clean), ("noise +-12", noisy(clean)), ("JPEG q75", jpeg(clean))]
    methods = {"before": old_labels, "after": new_labels}
    reference = {m: allowed(*fn(clean, exemplar)[:2]) for m, fn in methods.items()}
    same = torch.equal(reference["before"], reference["after"])
    print(f"clean map: the same pairs may match before and after: {same}")
    rows, notes = [], []
    table = Table(("condition label map", "labels before", "no source before", "as clean before", "labels after",
                   "no source after", "as clean after"), "lrrrrrr")
    border = border_cells(clean)
    for name, condition in variants:
        results = {}
        for method, fn in methods.items():
            cond, exem, palette = fn(condition, exemplar)
            pairs = allowed(cond, exem)
            results[method] = {
                "labels": palette.shape[0],
                "no source": float((~pairs.any(1)).float().mean()),
                "as clean": float((pairs == reference[method]).all(1).float().mean()),
                "picture": picture(cond, exem, palette, 256),
            }
            if method == "after" and name != "clean":
                changed = ~(pairs == reference[method]).all(1)
                lost = lost_labels(clean, palette)
                notes.append(f"* {name}: {int(changed.sum())} cells changed, {int((changed & border).sum())} of them next to "
                             f"another label (of all cells {border.float().mean():.0%} are); clean labels with no "
                             f"label within the tolerance: {len(lost)}"
                             + (f" (of {', '.join(map(str, lost))} pixels)" if lost else ""))
        rows.append((name, condition, results))
        table.add(name, *(cell for m in ("before", "after") for cell in (
            results[m]["labels"], f"{results[m]['no source']:.1%}", f"{results[m]['as clean']:.1%}")))
        print(f"{name:12s} before: {results['before']['labels']:3d} labels, no source {results['before']['no source']:6.1%}, "
              f"as clean {results['before']['as clean']:6.1%}   after: {results['after']['labels']:3d} labels, "
              f"no source {results['after']['no source']:6.1%}, as clean {results['after']['as clean']:6.1%}")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure(rows, exemplar).save(args.figure, optimize=True)
    print(f"wrote {args.figure}")
    if args.markdown:
        text = MARKDOWN.format(table=table, same="yes" if same else "NO", notes="\n".join(notes))
        Path(args.markdown).write_text(text)
        print(f"wrote {args.markdown}")
    return 0


MARKDOWN = """# Label maps through JPEG and noise: the colour-tolerance palette

`PYTHONPATH=. .venv/bin/python benchmarks/label_snapping.py` (or `python -m benchmarks.label_snapping`; writes this page and
`docs/label_snapping.png`). MIDMs Exemplar Set Encode, label_compare = "nearest condition colour",
on the shipped label-map workflow's maps (`workflows/inputs/midms_condition_labels.png` as the
condition, `midms_exemplar_labels.png` as the exemplar's, 512 px, 64 x 64 latent cells, labels at
each cell's centre pixel). The condition map is clean (as shipped), with uniform noise of +-12 per
channel, or through JPEG quality 75 (PIL, 4:2:0 chroma subsampling); the exemplar map is clean.

* **before**: the palette was the condition map's 64 most frequent exact colours and both maps
  snapped to the nearest of them. With noise or JPEG, those 64 are noisy copies of the largest
  labels; every noisy condition cell stays its own colour, which no exemplar cell snaps to.
* **after** (`midms_core.exemplars.label_colours`, colour_tolerance 24): the condition map's colours are
  clustered (greedy seeding by frequency, weighted k-means, centres within the tolerance merged;
  border blends with almost no 3 x 3 core dropped), condition cells go to the nearest label,
  exemplar cells to the nearest label within the tolerance, or to none.

**no source**: condition cells that no exemplar cell may serve (black in the source preview).
**as clean**: condition cells that may match exactly the exemplar cells they may match with the
clean map (same method).

{table}

On the clean map the same cell pairs may match before and after: {same} (the shipped workflow's
restriction is unchanged).

![before / after: each condition cell in its label's colour where some exemplar cell shares the label, black where none does](label_snapping.png)

After, where the cells that differ from the clean map's lie, and which clean labels no longer
stand as labels of their own (their pixels go to the nearest label):

{notes}

Reading it: with noise the palette finds the clean labels again; a label lost is a sliver whose
pixels hardly ever fill a 3 x 3 block, which the clustering cannot tell from a border blend
once its colour is noisy. With JPEG every cell keeps a source; the cells that change lie along
label borders, where the 4:2:0 chroma blends a few pixels of both labels and the cell centre
goes to one of the two, not always the clean one, and the smallest labels are smeared into
blends.
"""


if __name__ == "__main__":
    raise SystemExit(main())
