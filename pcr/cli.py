"""The `pcr` command line: one command per pipeline stage (the same functions the DVC stages call), plus tools."""

from __future__ import annotations

from pathlib import Path

import typer

from pcr import stage
from pcr.demo.cli import app as demo_app

app = typer.Typer(
    help="pcr: post-training quantization of text-to-image diffusion models (PCR + QDiffBench).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(demo_app, name="demo")

OUT = Path("outputs")
ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params file")


def _params(path: Path):
    from pcr.config import load_params

    return load_params(path)


@app.command()
def env(params: Path = ParamsOpt, out: Path = OUT / "env") -> None:
    """Validate params; write the numeric libraries' versions and the prompt snapshots the stages read."""
    from pcr.env import env as run

    stage.run(lambda: run(params, out))


@app.command()
def collect(params: Path = ParamsOpt, out: Path = OUT / "trajectories.zarr") -> None:
    """FP32 trajectories and per-step layer statistics of the calibration prompts."""
    from pcr.collect import collect as run

    stage.run(lambda: run(_params(params), out))


@app.command()
def weights(params: Path = ParamsOpt, trajectories: Path = OUT / "trajectories.zarr", out: Path = OUT / "weights.safetensors",
            losses: Path = OUT / "weights_loss.csv") -> None:
    """Quantized weights of every chosen layer: round to nearest, or AdaRound reconstruction (quant.weight_method)."""
    from pcr.weights.run import weights as run

    stage.run(lambda: run(_params(params), trajectories, out, losses))


@app.command()
def reference(params: Path = ParamsOpt, out: Path = OUT / "reference.zarr") -> None:
    """FP32 images of the evaluation prompts, with the evaluation seeds."""
    from pcr.images import reference as run

    stage.run(lambda: run(_params(params), out))


@app.command()
def calibrate(params: Path = ParamsOpt, trajectories: Path = OUT / "trajectories.zarr", out: Path = OUT / "calib.zarr",
              qparams: Path = OUT / "qparams.safetensors", qconfig: Path = OUT / "qconfig.json",
              activations: Path = OUT / "activations.zarr", weights: Path = OUT / "weights.safetensors") -> None:
    """Quantize weights once; calibrate activations per step (progressive | fp32 | shared)."""
    from pcr.calibrate.run import calibrate as run
    from pcr.env import relax_calibration

    def go() -> None:
        p = _params(params)
        run(p, trajectories, out, qparams, qconfig, activations, weights, relax=relax_calibration(p))

    stage.run(go)


@app.command()
def sensitivity(params: Path = ParamsOpt, trajectories: Path = OUT / "trajectories.zarr", calib: Path = OUT / "calib.zarr",
                qparams: Path = OUT / "qparams.safetensors", qconfig: Path = OUT / "qconfig.json",
                out: Path = OUT / "sensitivity.csv") -> None:
    """Per-step sensitivity to relax.bits: the error to FP32 that relaxing each step alone removes (relax.where: auto)."""
    from pcr.sensitivity import sensitivity_stage

    stage.run(lambda: sensitivity_stage(_params(params), trajectories, calib, qparams, qconfig, out))


@app.command()
def relax(params: Path = ParamsOpt, qconfig: Path = OUT / "qconfig.json", sensitivity: Path = OUT / "sensitivity.csv",
          out: Path = OUT / "schedule.json", bits: Path = OUT / "bits.csv") -> None:
    """Per-step activation bitwidth schedule (activation relaxing)."""
    from pcr.relax import relax as run

    stage.run(lambda: typer.echo(run(_params(params).relax, qconfig, out, sensitivity, bits).to_json()))


@app.command()
def export(params: Path = ParamsOpt, qparams: Path = OUT / "qparams.safetensors", qconfig: Path = OUT / "qconfig.json",
           calib: Path = OUT / "calib.zarr", schedule: Path = OUT / "schedule.json", out: Path = OUT / "quantized") -> None:
    """The quantized UNet with the relax schedule applied, as one artifact folder (load with pcr.load_pipeline)."""
    from pcr.export import export as run

    stage.run(lambda: run(_params(params), qparams, qconfig, calib, schedule, out))


@app.command()
def generate(params: Path = ParamsOpt, quantized: Path = OUT / "quantized", reference: Path = OUT / "reference.zarr",
             out: Path = OUT / "generated.zarr") -> None:
    """Images of the evaluation prompts from the exported quantized model."""
    from pcr.generate import generate as run

    stage.run(lambda: run(_params(params), quantized, reference, out))


@app.command()
def grid(params: Path = ParamsOpt, reference: Path = OUT / "reference.zarr", generated: Path = OUT / "generated.zarr",
         out: Path = OUT / "grid.png") -> None:
    """grid.png: the first generate.grid_images FP32 images above their quantized twins."""
    from pcr.grid import grid as run

    stage.run(lambda: run(_params(params).generate.grid_images, reference, generated, out))


@app.command()
def score(params: Path = ParamsOpt, reference: Path = OUT / "reference.zarr", generated: Path = OUT / "generated.zarr",
          trajectories: Path = OUT / "trajectories.zarr", calib: Path = OUT / "calib.zarr",
          metrics: Path = OUT / "metrics.json", plots: Path = OUT / "plots", samples: Path = OUT / "samples") -> None:
    """QDiffBench with 95% intervals: FID/KID to FP32 and to real, CLIP score, PSNR/SSIM, attribute accuracy."""
    import json

    from pcr.score import score as run

    stage.run(lambda: typer.echo(json.dumps(run(_params(params), reference, generated, trajectories, calib, metrics, plots,
                                                samples), indent=1)))


@app.command()
def compare(
    a: str = typer.Argument(..., help="experiment A: a samples directory (score's outputs/samples) or a DVC experiment/rev"),
    b: str = typer.Argument(..., help="experiment B, of the same eval set"),
    bootstrap: int = typer.Option(1000, help="paired bootstrap replicates"),
    seed: int = typer.Option(0, help="the bootstrap's seed"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of markdown tables"),
) -> None:
    """Paired 95% intervals of A − B for every QDiffBench figure, and whether each is significant."""
    import json

    from pcr.metrics.intervals import compare_dirs, markdown
    from pcr.report import samples_at

    def run() -> None:
        with samples_at(a) as pa, samples_at(b) as pb:
            result = compare_dirs(pa, pb, bootstrap, seed)
        typer.echo(json.dumps(result, indent=1) if as_json else markdown(result, (a, b)))

    stage.run(run)


@app.command()
def inspect(store: Path = typer.Argument(..., help="a .zarr store written by a stage")) -> None:
    """Print a store's tree: arrays with shape, dtype, dims, chunks and bytes stored; attrs."""
    from pcr.stores import describe

    if not store.exists():
        typer.echo(f"error: {store} does not exist", err=True)
        raise typer.Exit(2)
    typer.echo(describe(store))


@app.command()
def report(
    only: list[str] = typer.Option(["*"], help="run only the rows whose label matches (fnmatch), e.g. 'W8A8*'"),
    set_: list[str] = typer.Option([], "--set", "-S", help="extra params overrides for every row, e.g. score.bootstrap=200"),
    out: Path = OUT / "results.md",
    from_json: list[Path] = typer.Option([], help="only format results files written before (several: merged)"),
    readme: Path = typer.Option(None, help="also write the document between this README's markers of --block"),
    block: str = typer.Option("evidence", help="the README block: evidence (the claims table) | objectives (issue 20's study) | paper (the official preset)"),
) -> None:
    """Run the evidence table's rows as DVC experiments; write the table, the claims' paired differences and verdicts."""
    from pcr import report as rep

    def go() -> None:
        text = rep.from_json(from_json) if from_json else rep.run(out=out, only=tuple(only), extra=tuple(set_))
        if readme is not None:
            rep.write_readme(readme, text, block)
        typer.echo(text)

    stage.run(go)


@app.command()
def drift(
    trajectories: Path = typer.Argument(OUT / "trajectories.zarr", help="collect's FP32 trajectories"),
    calib: Path = typer.Argument(OUT / "calib.zarr", help="a progressive calibration's store"),
    layers: int = typer.Option(5, help="how many of the layers that move most to name"),
) -> None:
    """How far the quantized trajectory's layer-input ranges drift from the FP32 ones, in LSB, per step: whether
    progressive calibration has anything to follow on this model and bitwidth (before generating anything)."""
    from pcr import drift as drift_mod

    stage.run(lambda: typer.echo(drift_mod.describe(drift_mod.drift(trajectories, calib), layers)))


@app.command()
def version() -> None:
    """Print the pcr version."""
    from pcr import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
