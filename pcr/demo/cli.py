"""`pcr demo ...`: train and inspect the built-in demo model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="The built-in demo text-to-image model.", no_args_is_help=True)

DEMO_DIR = Path("data/demo")
PROMPTS_DIR = Path("data/prompts")


@app.command()
def prompts(
    out_dir: Path = typer.Option(PROMPTS_DIR, help="Where calibration/eval/eval_paraphrase .txt go."),
) -> None:
    """Write the prompt files (deterministic)."""
    from pcr.demo.render import write_prompt_files

    for name, path in write_prompt_files(out_dir).items():
        typer.echo(f"{name}: {path}")


@app.command()
def train(
    stage: list[str] = typer.Option(None, help="Only these stages (judge, vae, clip, unet); default all."),
    work_dir: Path = typer.Option(None, help="Checkpoints and caches (default ~/.cache/pcr/demo-train)."),
    out_dir: Path = typer.Option(DEMO_DIR, help="Where the judge, clip and pipeline are exported."),
    threads: int = typer.Option(1, help="torch threads; 1 is fastest on a shared 2-core machine."),
) -> None:
    """Train every part of the demo model and export it; a rerun resumes from the checkpoints."""
    from pcr.demo.render import write_prompt_files
    from pcr.demo.train import DEFAULT_WORK_DIR, STAGES, run

    write_prompt_files(PROMPTS_DIR)
    run(tuple(stage) if stage else STAGES, work_dir or DEFAULT_WORK_DIR, out_dir, threads)


@app.command("eval")
def eval_(
    out_dir: Path = typer.Option(
        DEMO_DIR, help="Demo dir holding pipeline/ and judge/; quality.json and grid.png go here."
    ),
    steps: int = typer.Option(None, help="Sampling steps (default: the recommended 25)."),
    guidance: float = typer.Option(
        None, help="Classifier-free guidance scale (default: the recommended 4.5)."
    ),
    limit: int = typer.Option(None, help="Only the first N prompts (quick look)."),
    threads: int = typer.Option(1, help="torch threads."),
) -> None:
    """Colour/shape/background accuracy of FP32 generations on the held-out eval captions."""
    import torch

    from pcr.demo.evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS, evaluate

    torch.set_num_threads(threads)
    result = evaluate(
        out_dir / "pipeline", out_dir / "judge", PROMPTS_DIR / "eval.txt", PROMPTS_DIR / "eval_paraphrase.txt",
        out_dir, steps or DEFAULT_STEPS, guidance if guidance is not None else DEFAULT_GUIDANCE, limit,
    )  # fmt: skip
    typer.echo(json.dumps(result, indent=2))


@app.command()
def sample(
    prompt: str = typer.Argument(..., help='e.g. "a red circle on a gray background"'),
    out: Path = typer.Option(Path("sample.png"), help="PNG to write (4 seeds side by side, upscaled)."),
    pipeline_dir: Path = typer.Option(DEMO_DIR / "pipeline"),
    steps: int = typer.Option(25),
    guidance: float = typer.Option(4.5),
) -> None:
    """Generate four images of one prompt."""
    import numpy as np
    from PIL import Image

    from pcr.demo.evaluate import generate, load_pipeline

    images = generate(load_pipeline(pipeline_dir), [prompt] * 4, [0, 1, 2, 3], steps, guidance)
    row = np.concatenate(list(images), axis=1)  # [32, 128, 3]
    Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4), Image.Resampling.NEAREST).save(out)
    typer.echo(f"wrote {out}")
