"""Fine-tune MiniLM inside the model as a text expert on mosi-utterance-clean-tokens (issue 11 part 2).

``MMFUSE_DATA_DIR=../shared/data .venv/bin/python benchmarks/mosi_finetune_minilm.py --epochs 5 --unfreeze-epoch 3``

The ``unimodal-text`` row of the comparison protocol (``mmfuse.evaluate.train_model``: the data set's preset, the
``train`` split for the optimiser, ``val`` for early stopping and the restored best epoch, ``test`` scored once)
with the packaged MiniLM inside the model instead of its frozen sentence embeddings: the backbone is frozen for
the first ``unfreeze_epoch - 1`` epochs (only the layers after it train), then trains at ``backbone_lr``.
``--frozen`` is the control: the same model with MiniLM frozen throughout (``"trainable": False``: eval mode,
no gradients), i.e. the frozen sentence embeddings computed inside the model. ``--probe`` only times one training
step with the backbone frozen and one with it trainable (to size a run).
Prints validation and test accuracy and the process CPU time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from mmfuse.data import load_dataset
from mmfuse.evaluate.protocol import model_config_for, preset_for, settings_for
from mmfuse.evaluate.train_run import train_model
from mmfuse.layers.pretrained import PretrainedTextEncoder
from mmfuse.models import build_model
from mmfuse.train import TrainConfig, build_optimizer

NAME = "mosi-utterance-clean-tokens"
BACKBONE = "pretrained.text.backbone"


def _overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    model = {
        "pretrained": {
            "text": {"source": "minilm", "max_length": args.max_length, "normalize": True, "trainable": not args.frozen}
        }
    }
    train = {
        "backbone_lr": args.backbone_lr,
        "freeze": [BACKBONE] if args.unfreeze_epoch > 1 and not args.frozen else [],
        "unfreeze_epoch": args.unfreeze_epoch if args.unfreeze_epoch > 1 and not args.frozen else None,
        "checkpoint_every": None,  # no resumable checkpoint of 3 x 22M optimiser tensors per epoch
        "device": "cpu",
    }
    return model, train


def _probe(args: argparse.Namespace) -> None:
    ds = load_dataset(NAME)
    model_over, train_over = _overrides(args)
    model_kwargs, train_kwargs = settings_for(
        preset_for(ds), "unimodal-text", model_overrides=model_over, train_overrides=train_over, epochs=args.epochs
    )
    model = build_model(model_config_for(ds, "unimodal-text", **model_kwargs)).train()
    cfg = TrainConfig(**{**train_kwargs, "freeze": [], "unfreeze_epoch": None})
    optimizer = build_optimizer(model, cfg)
    train = ds.split("train")
    batch = train.collate_fn([train[i] for i in range(cfg.batch_size)])
    steps = int(batch.padding_mask.sum())
    for frozen in (True, False):
        encoder = model.get_submodule("pretrained.text")
        assert isinstance(encoder, PretrainedTextEncoder)
        encoder.set_trainable(not frozen)
        start = time.process_time()
        loss = torch.nn.functional.cross_entropy(model(batch).flatten(0, 1), batch.targets.flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        label = "frozen" if frozen else "trainable"
        print(f"one step, backbone {label}: {time.process_time() - start:.1f} s CPU ({steps} utterances)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--unfreeze-epoch", type=int, default=3, help="1 = trainable from the start")
    parser.add_argument("--backbone-lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="model directory (default: a temporary one)")
    parser.add_argument("--probe", action="store_true", help="only time one training step")
    parser.add_argument("--frozen", action="store_true", help="the control: MiniLM frozen throughout (eval mode)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        _probe(args)
        return
    model_over, train_over = _overrides(args)
    wall, cpu = time.perf_counter(), time.process_time()
    res = train_model(
        NAME,
        args.out or tempfile.mkdtemp(),
        fusion="unimodal-text",
        seed=args.seed,
        epochs=args.epochs,
        model_overrides=model_over,
        train_overrides=train_over,
        device="cpu",
        overwrite=True,
    )
    best = next(row for row in res.history if row["epoch"] == res.best_epoch)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in best.items()}))
    print(
        f"best epoch {res.best_epoch} of {len(res.history)}: val accuracy {best['val_accuracy']:.4f}, "
        f"test accuracy {res.test_metrics['accuracy']:.4f}; {time.perf_counter() - wall:.0f} s wall, "
        f"{time.process_time() - cpu:.0f} s CPU"
    )


if __name__ == "__main__":
    main()
