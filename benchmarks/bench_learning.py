"""How fast does a denoiser backbone learn to draw the prompted digit? `python -m benchmarks.bench_learning`.

The zoo's CPU models have not learned `moving_digits` at the budgets tried (their cards: the domain network reads
the prompted digits in 0% of their videos). This benchmark isolates the first thing a video model must learn: to
draw a legible, prompted digit in one frame of the frozen KL autoencoder's latent space. Each backbone is trained
from the same seed on single-digit frames of the training split, conditioned on the digit's class (a learned
embedding, 10% dropped for classifier-free guidance) or on the frame's caption (`--condition text`, the zoo's
learned text encoder), with the diffusion process of the `video_diffusion` YAML (epsilon, scaled-linear,
DPM-Solver++ at 10 steps, guidance 2), the zoo's LR warm-up and EMA. Every `--every` steps its weight average (EMA as in `zoo train`) draws `--samples` frames, one per
digit in turn, and the dataset's domain network judges them: accuracy is the share whose predicted digit is the
prompted one (chance 0.1; real frames score about 1.0). Backbones are printed side by side with their parameter
counts and training seconds, so a comparison is at equal steps and visible cost.

Backbones: `dit` (the zoo's `LatentVideoDenoiser` on one frame, `--dit dim,depth,patch`) and `unet` (diffusers'
`UNet2DModel`, two levels, `--unet width`: a convolutional reference with the same latent, data and process).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from zoo.components.autoencoder import load_autoencoder_for
from zoo.components.denoiser import DenoiserConfig, LatentVideoDenoiser
from zoo.components.sampling import DiffusionProcess
from zoo.components.text import NULL_PROMPT, build_text_encoder
from zoo.data import create_dataset
from zoo.interface import lr_factor
from zoo.registry import model_config
from zoo.training import ema_average

NULL_CLASS = 10  # the class embedding's extra row: the unconditional input of guidance
CONDITION_DROPOUT = 0.1
WARMUP_STEPS, EMA_DECAY = 100, 0.999  # the zoo_moving_digits recipe's


def prompt_for(digit: int) -> str:
    return f"a {digit} moving left"


class Conditioner(nn.Module):
    """Digit classes (`"class"`) or captions (`"text"`) -> `(tokens [B, L, D] or None, mask or None, vector [B, D])`."""

    def __init__(self, condition: str, dim: int = 64) -> None:
        super().__init__()
        self.condition = condition
        self.embed = nn.Embedding(NULL_CLASS + 1, dim) if condition == "class" else build_text_encoder("learned", dim)

    def forward(self, digits: Tensor, captions: list[str]) -> tuple[Tensor | None, Tensor | None, Tensor]:
        if self.condition == "class":
            return None, None, self.embed(digits)
        return self.embed.encode(captions)


class DiTBackbone(nn.Module):
    """The zoo's space-time denoiser on one frame: AdaLN from the condition vector, cross-attention to text tokens."""

    def __init__(self, condition: str, dim: int, depth: int, patch_size: int, conv_width: int = 0,
                 conv_depth: int = 1) -> None:
        super().__init__()
        self.conditioner = Conditioner(condition)
        self.denoiser = LatentVideoDenoiser(DenoiserConfig(
            latent_channels=4, latent_size=8, patch_size=patch_size, text_dim=64 if condition == "text" else 0,
            frame_cond_dim=64, dim=dim, depth=depth, num_heads=4, conv_width=conv_width, conv_depth=conv_depth))

    def forward(self, x_t: Tensor, t: Tensor, digits: Tensor, captions: list[str]) -> Tensor:
        tokens, mask, vector = self.conditioner(digits, captions)
        return self.denoiser(x_t[:, None], t, text_emb=tokens, text_mask=mask, frame_cond=vector[:, None])[:, 0]


class UNetBackbone(nn.Module):
    """diffusers' UNet2DModel (ResNet blocks at 8x8, attention at 4x4) with the condition vector added to its time
    embedding (its `class_embedding` slot)."""

    def __init__(self, condition: str, width: int) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.conditioner = Conditioner(condition, dim=4 * width)
        self.unet = UNet2DModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(width, 2 * width), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=16, class_embed_type="identity")

    def forward(self, x_t: Tensor, t: Tensor, digits: Tensor, captions: list[str]) -> Tensor:
        return self.unet(x_t, t, class_labels=self.conditioner(digits, captions)[2]).sample


@dataclass
class Checkpoint:
    backbone: str
    parameters: int
    step: int
    train_seconds: float
    loss: float
    accuracy: float


def digit_accuracy(frames: Tensor, digits: Tensor, classifier: nn.Module) -> float:
    """Share of single frames `[N, C, H, W]` whose digit the domain network reads as `digits [N]` (each frame is
    shown to it as a still clip of its 8 frames)."""
    with torch.no_grad():
        logits = classifier(frames[:, None].expand(-1, 8, -1, -1, -1))["digits"]
    return float((logits.argmax(dim=1) == digits).float().mean())


def train_and_probe(
    name: str, model: nn.Module, *, steps: int, every: int, batch_size: int, samples: int, learning_rate: float,
    seed: int = 0, report: Callable[[Checkpoint], None] = print,
) -> list[Checkpoint]:
    """Train `model` on single-digit frames; every `every` steps, judge `samples` frames of its weight average."""
    from benchmarks.features.domain import load_domain_net

    autoencoder = load_autoencoder_for("moving_digits_kl", 1, 32)
    classifier = load_domain_net("moving_digits")
    process = DiffusionProcess(model_config("video_diffusion").diffusion)
    frames = create_dataset("moving_digits", "train", overrides={"num_frames": 1, "num_digits": [1]})
    loader = iter(DataLoader(frames, batch_size=batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(seed)))
    torch.manual_seed(seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    average = copy.deepcopy(model).eval()
    averaging = ema_average(EMA_DECAY)
    noise = torch.Generator().manual_seed(seed)
    wanted = torch.arange(samples) % 10
    wanted_captions = [prompt_for(int(d)) for d in wanted]
    checkpoints, seconds = [], 0.0
    for step in range(1, steps + 1):
        batch = next(loader)
        started = time.perf_counter()
        with torch.no_grad():
            x0 = autoencoder.encode(batch["video"][:, 0])
        digits = batch["labels"]["digits"][:, 0]
        dropped = torch.rand(len(digits), generator=noise) < CONDITION_DROPOUT
        digits = torch.where(dropped, torch.full_like(digits, NULL_CLASS), digits)
        captions = [NULL_PROMPT if d else c for c, d in zip(batch["text"], dropped.tolist(), strict=True)]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * lr_factor(step - 1, WARMUP_STEPS, "constant", None)
        timesteps = process.sample_timesteps((len(x0),), noise)
        loss = process.training_loss(lambda x_t, t, d=digits, c=captions: model(x_t, t, d, c), x0, timesteps, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        with torch.no_grad():
            for averaged, current in zip(average.parameters(), model.parameters(), strict=True):
                averaged.copy_(averaging(averaged, current, torch.tensor(step)))
        seconds += time.perf_counter() - started
        if step % every == 0 or step == steps:
            generator = torch.Generator().manual_seed(seed)
            null_digits, null_captions = torch.full_like(wanted, NULL_CLASS), [NULL_PROMPT] * samples
            with torch.no_grad():
                latents = process.sample(
                    lambda x_t, t: average(x_t, t, wanted, wanted_captions), (samples, 4, 8, 8), generator,
                    uncond_fn=lambda x_t, t, d=null_digits, c=null_captions: average(x_t, t, d, c))
                accuracy = digit_accuracy(autoencoder.decode(latents), wanted, classifier)
            checkpoint = Checkpoint(name, sum(p.numel() for p in parameters), step, seconds, loss.item(), accuracy)
            checkpoints.append(checkpoint)
            report(checkpoint)
    return checkpoints


def build_backbone(name: str, condition: str, dit: tuple[int, ...], unet_width: int) -> nn.Module:
    if name == "dit":
        return DiTBackbone(condition, *dit)
    if name == "unet":
        return UNetBackbone(condition, unet_width)
    raise SystemExit(f"unknown backbone '{name}'; use dit or unet")


def main(argv: list[str] | None = None) -> list[Checkpoint]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="dit,unet", help="comma-separated: dit, unet")
    parser.add_argument("--condition", choices=["class", "text"], default="class")
    parser.add_argument("--dit", default="96,2,2", help="dim,depth,patch_size[,conv_width,conv_depth] (default: the "
                        "zoo's tiny denoiser, no convolutions)")
    parser.add_argument("--unet", type=int, default=64, help="UNet width at 8x8 (twice that at 4x4)")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dit = tuple(int(v) for v in args.dit.split(","))
    if len(dit) not in (3, 5):
        raise SystemExit("--dit takes dim,depth,patch_size[,conv_width,conv_depth], e.g. 96,2,2 or 96,2,2,64,2")
    print(f"# single-digit frames, {args.condition}-conditioned, batch {args.batch}, lr {args.lr}, {args.threads} "
          f"thread(s); accuracy of {args.samples} EMA samples read by the domain network (chance 0.1)")
    print(f"{'backbone':<10}{'params':>10}{'step':>7}{'train s':>9}{'loss':>8}{'accuracy':>10}", flush=True)
    checkpoints = []
    for name in args.backbones.split(","):
        model = build_backbone(name, args.condition, dit, args.unet)
        checkpoints += train_and_probe(
            name, model, steps=args.steps, every=args.every, batch_size=args.batch, samples=args.samples,
            learning_rate=args.lr,
            report=lambda c: print(f"{c.backbone:<10}{c.parameters:>10}{c.step:>7}{c.train_seconds:>9.0f}"
                                   f"{c.loss:>8.4f}{c.accuracy:>10.3f}", flush=True))
    return checkpoints


if __name__ == "__main__":
    main()
