"""``cnnbench analyze``: layer responses (He et al. 2016, Figure 7) and per-layer gradient norms.

**Which layers.** Every 3x3 convolution, in the order the forward pass runs them (the stem conv
included; 1x1 convs of bottleneck blocks and projection shortcuts are not 3x3 layers and are left out).

**What "response" means.** He et al.: "the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)". The BN that follows a conv is found from the data flow, not from names:
a short eval-mode forward pass with hooks records which BatchNorm receives a conv's output tensor
itself. When every 3x3 conv feeds a BN this way (plain nets and ResNets, basic and bottleneck, VGG with
BN) the response is that BN's output (``measured_at=bn_output``). Otherwise (pre-activation ResNets,
where the BN belongs to the next unit and the last conv of a block feeds the addition; nets without BN)
the response of every layer is the conv's own output (``measured_at=conv_output``): for pre-activation
units that is the residual function's output, the quantity the paper's analysis is about.

**The statistic.** The standard deviation of all values of the response (images x channels x
positions, population std) over the first ``samples`` test images, BN in eval mode (running
statistics), fp32, accumulated in float64.

**Gradient norms.** The L2 norm of each 3x3 layer's weight gradient, and of each block's parameters
(``cnnbench.engine.gradflow.block_groups``, the grouping of the training-time ``grad_norm/block/...``
scalars), for the mean cross-entropy of one fixed batch: ``trainer.batch_size`` training images drawn
with the run's seed, not augmented, normalized as in training. BN is in **train mode**, as when training
computes gradients (batch statistics; a copy of the model, so the loaded one is untouched), and the
global RNG is seeded with the run's seed first, so stochastic depth and dropout draw the same every time.
No weight decay term. ``at_init`` repeats this on the model as training initialized it (seed, then build).
"""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.diagnostics.runs import Compared, load_compared, output_folder, prepare_output
from cnnbench.engine.gradflow import block_groups
from cnnbench.errors import CnnbenchError

DEFAULT_SAMPLES = 1000
CSV_NAME, PNG_NAME = "analysis.csv", "analysis.png"
CSV_COLUMNS = (
    "run",
    "layer_index",
    "layer",
    "measured_at",
    "response_std",
    "grad_norm",
    "block",
    "block_grad_norm",
    "grad_norm_init",
    "block_grad_norm_init",
    "samples",
    "grad_batch",
    "run_dir",
)


def is_conv3x3(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (3, 3)


@dataclass
class ResponseLayer:
    name: str  # the conv's module name, e.g. layer1.0.conv2
    conv: nn.Conv2d
    probe_name: str  # the module whose output is measured: the BN after the conv, or the conv itself
    probe: nn.Module
    measured_at: str  # "bn_output" or "conv_output"


@torch.no_grad()
def response_layers(model: nn.Module, example: torch.Tensor) -> list[ResponseLayer]:
    """The model's 3x3 convs in forward order, each with the module whose output is its response.

    ``example``: a small normalized batch; the model runs it once in eval mode (its mode is restored).
    """
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []  # 3x3 convs in the order they run
    produced: dict[int, nn.Module] = {}  # id(conv output) -> conv
    keep: list[torch.Tensor] = []  # keeps outputs alive so that their ids stay unique
    feeds: dict[nn.Module, nn.Module] = {}  # conv -> the BN that takes its output tensor itself

    def on_conv(module, args, output):
        if module not in order:
            order.append(module)
        produced[id(output)] = module
        keep.append(output)

    def on_bn(module, args):
        conv = produced.get(id(args[0])) if args else None
        if conv is not None:
            feeds.setdefault(conv, module)

    handles = [m.register_forward_hook(on_conv) for m in model.modules() if is_conv3x3(m)]
    handles += [
        m.register_forward_pre_hook(on_bn)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not order:
        raise CnnbenchError(
            f"{type(model).__name__} has no 3x3 convolution, so there is no layer response to analyze "
            "(the analysis follows He et al. 2016, Figure 7). Use a convolutional model."
        )
    use_bn = all(conv in feeds for conv in order)
    return [
        ResponseLayer(
            name=names[conv],
            conv=conv,
            probe_name=names[feeds[conv]] if use_bn else names[conv],
            probe=feeds[conv] if use_bn else conv,
            measured_at="bn_output" if use_bn else "conv_output",
        )
        for conv in order
    ]


@torch.no_grad()
def response_stds(
    model: nn.Module, layers: Sequence[ResponseLayer], inputs: torch.Tensor, batch_size: int = 1000
) -> list[float]:
    """Population std of each layer's response over ``inputs`` (normalized), eval mode, float64 sums."""
    device = inputs.device
    sums = torch.zeros(len(layers), 3, dtype=torch.float64, device=device)  # count, sum, sum of squares

    def hook(index: int):
        def record(module, args, output):
            out = output.detach().double()
            sums[index, 0] += out.numel()
            sums[index, 1] += out.sum()
            sums[index, 2] += (out * out).sum()

        return record

    handles = [layer.probe.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    try:
        model.eval()
        for xb in inputs.split(batch_size):
            model(xb)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    count, total, squares = sums.T
    mean = total / count
    return (squares / count - mean * mean).clamp_min(0).sqrt().tolist()


@dataclass
class GradNorms:
    layers: list[float]  # per 3x3 layer (the conv weight's gradient)
    blocks: dict[str, float]  # per block group (gradflow.block_groups)
    block_of: dict[str, str] = field(default_factory=dict)  # conv name -> block group name


def grad_norms(
    model: nn.Module, layer_names: Sequence[str], images: torch.Tensor, labels: torch.Tensor, seed: int
) -> GradNorms:
    """Gradient norms of the mean cross-entropy on one batch, BN in train mode, on a copy of ``model``."""
    from cnnbench.core.rng import seed_everything

    work = copy.deepcopy(model).train()
    work.zero_grad(set_to_none=True)
    seed_everything(seed)
    F.cross_entropy(work(images), labels).backward()
    modules = dict(work.named_modules())
    layers = [_norm([modules[name].weight]) for name in layer_names]
    blocks, block_of = {}, {}
    for group, members in block_groups(work):
        params = [p for m in members for p in m.parameters()]
        blocks[group] = _norm(params)
        ids = {id(p) for p in params}
        for name in layer_names:
            if id(modules[name].weight) in ids:
                block_of[name] = group
    return GradNorms(layers, blocks, block_of)


def _norm(params: Sequence[torch.Tensor]) -> float:
    grads = [p.grad.detach().double() for p in params if p.grad is not None]
    return math.sqrt(sum(float((g * g).sum()) for g in grads)) if grads else 0.0


@dataclass
class RunAnalysis:
    label: str
    run_dir: Path
    layers: list[ResponseLayer]
    stds: list[float]
    grads: GradNorms
    grads_init: GradNorms | None
    samples: int
    grad_batch: int

    @property
    def measured_at(self) -> str:
        return self.layers[0].measured_at


def fixed_batch(compared: Compared, images: torch.Tensor, labels: torch.Tensor):
    """``trainer.batch_size`` training images drawn with the run's seed (not augmented), normalized."""
    run = compared.run
    n = min(int(run.cfg.trainer.batch_size), len(labels))
    generator = torch.Generator().manual_seed(int(run.cfg.seed))
    index = torch.randperm(len(labels), generator=generator)[:n].sort().values.to(labels.device)
    return run.normalize(images[index]), labels[index]


def analyze_run(compared: Compared, samples: int | None, at_init: bool) -> RunAnalysis:
    run = compared.run
    data = run.load_data()
    test_x, _ = data.eval_sets["test"]
    n = min(DEFAULT_SAMPLES, len(test_x)) if samples is None else samples
    if n > len(test_x):
        raise CnnbenchError(
            f"--samples {n} is more than the {len(test_x)} test images of {run.run_dir} "
            f"({run.cfg.data.name}). Use --samples {len(test_x)} or fewer. Nothing was written."
        )
    inputs = run.normalize(test_x[:n])
    layers = response_layers(run.model, inputs[:2])
    stds = response_stds(run.model, layers, inputs, int(run.cfg.trainer.get("eval_batch_size", 1000)))
    xb, yb = fixed_batch(compared, data.train_images, data.train_labels)
    names = [layer.name for layer in layers]
    seed = int(run.cfg.seed)
    grads = grad_norms(run.model, names, xb, yb, seed)
    grads_init = grad_norms(initial_model(compared), names, xb, yb, seed) if at_init else None
    return RunAnalysis(compared.label, run.run_dir, layers, stds, grads, grads_init, n, len(yb))


def initial_model(compared: Compared) -> nn.Module:
    """The model as training initialized it: the global RNG seeded with the run's seed, then built."""
    from cnnbench.core.rng import seed_everything
    from cnnbench.engine.parts import model_options_of
    from cnnbench.models import build_model

    cfg = compared.run.cfg
    seed_everything(int(cfg.seed))
    model = build_model(
        cfg.model.name, depth=int(cfg.depth), num_classes=compared.run.num_classes, **model_options_of(cfg)
    )
    return model.to(compared.run.device)


def check_samples(samples: int | None) -> None:
    if samples is not None and samples < 1:
        raise CnnbenchError(f"--samples {samples} must be at least 1. Nothing was written.")


@dataclass
class AnalyzeResult:
    out: Path
    csv: Path
    png: Path
    analyses: list[RunAnalysis]


def analyze_runs(
    run_dirs: Sequence[Path], samples: int | None = None, at_init: bool = False, device: str = "auto"
) -> list[RunAnalysis]:
    """Analyze every run (one comparison); writes nothing."""
    check_samples(samples)
    runs = load_compared(run_dirs, device, "cnnbench analyze")
    return [analyze_run(c, samples, at_init) for c in runs]


def analyze(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    samples: int | None = None,
    at_init: bool = False,
    device: str = "auto",
) -> AnalyzeResult:
    """Analyze every run (one comparison) and write analysis.csv and analysis.png into ``out``."""
    analyses = analyze_runs(run_dirs, samples, at_init, device)
    folder = output_folder(run_dirs, out)
    return write_analysis(analyses, folder)


def write_analysis(analyses: Sequence[RunAnalysis], folder: Path) -> AnalyzeResult:
    """analysis.csv and analysis.png into ``folder`` (created if need be)."""
    from cnnbench.diagnostics.figures import plot_analysis

    prepare_output(folder)
    csv_path, png = folder / CSV_NAME, folder / PNG_NAME
    write_csv(analyses, csv_path)
    plot_analysis(analyses, png)
    return AnalyzeResult(folder, csv_path, png, list(analyses))


def analysis_rows(analyses: Sequence[RunAnalysis]) -> list[dict]:
    """One row per run and 3x3 layer: the columns of analysis.csv."""
    rows = []
    for a in analyses:
        for i, layer in enumerate(a.layers):
            block = a.grads.block_of.get(layer.name, "")
            init = a.grads_init
            rows.append(
                {
                    "run": a.label,
                    "layer_index": i + 1,
                    "layer": layer.name,
                    "measured_at": layer.measured_at,
                    "response_std": a.stds[i],
                    "grad_norm": a.grads.layers[i],
                    "block": block,
                    "block_grad_norm": a.grads.blocks.get(block, ""),
                    "grad_norm_init": init.layers[i] if init else "",
                    "block_grad_norm_init": init.blocks.get(block, "") if init else "",
                    "samples": a.samples,
                    "grad_batch": a.grad_batch,
                    "run_dir": str(a.run_dir),
                }
            )
    return rows


def write_csv(analyses: Sequence[RunAnalysis], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(analysis_rows(analyses))
