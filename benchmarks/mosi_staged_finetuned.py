"""Fusions over a fine-tuned MiniLM text expert on mosi-utterance-clean-tokens, staged (issue 11 parts 2 and 4).

``MMFUSE_DATA_DIR=../shared/data .venv/bin/python benchmarks/mosi_staged_finetuned.py``

One command runs the whole experiment:

1. **Expert** (:func:`mmfuse.train.fit_staged`): the ``unimodal-text`` model of ``mosi-utterance-clean-tokens`` with
   MiniLM inside it, the recipe of ``benchmarks/mosi_finetune_minilm.py`` (frozen for ``unfreeze_epoch - 1`` epochs,
   then ``backbone_lr``), trained once (``--seed``) on the ``train`` split only (training minus validation): the
   stage never reads validation, runs its ``--epochs`` and keeps the epoch with the lowest training loss.
2. **Features**: the expert's representation before its head (``text_expert``) for every utterance of every split,
   written with the released audio as an mmfuse data set folder (fit_staged's cache), plus the fusion stage of
   fit_staged (``--stage-fusion`` with the ``mosi-utterance-clean`` preset's settings, seed 0).
3. **Comparison**: ``mmfuse compare --dataset <that folder> --preset <the mosi-utterance-clean preset>`` over
   ``--fusion`` and ``--fusion-seeds`` seeds with ``--jobs`` processes: the table with the 95% intervals and the
   paired test against the best unimodal row chosen on validation, as for any data set.

The fusion seeds vary the fusion stage only: every row reads the one expert's features, so the expert's own seed
variance is not in the intervals. Prints the expert's time, the comparison's table and the CPU time, wall time and
load average of each stage. ``--epochs 1 --unfreeze-epoch 1 --max-length 8 --fusion concat,unimodal
--fusion-seeds 1 --fusion-epochs 1`` is a quick smoke run of the whole pipeline.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosi_finetune_minilm import NAME, _overrides

from mmfuse._io import atomic_write_json
from mmfuse.data import MultimodalDataset, dataset_preset, load_dataset
from mmfuse.evaluate.protocol import Preset, model_config_for, preset_for, settings_for
from mmfuse.train import ExpertStage, TrainConfig, fit_staged

FUSION_PRESET = "mosi-utterance-clean"  # the comparison settings of the same utterances with frozen text
_FROM_DATA = ("modality_dims", "out_dim", "task", "label_level")  # fit_staged fills these in


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _expert(ds: MultimodalDataset, dataset_model: dict, dataset_train: dict) -> ExpertStage:
    """The unimodal-text row of the tokens data set as a staged expert (the model of mosi_finetune_minilm.py)."""
    settings = model_config_for(ds, "unimodal-text", **dataset_model).to_dict()
    model = {k: v for k, v in settings.items() if k not in _FROM_DATA}
    return ExpertStage("text", model=model, train=TrainConfig(**dataset_train))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="expert epochs")
    parser.add_argument("--unfreeze-epoch", type=int, default=3, help="1 = trainable from the start")
    parser.add_argument("--backbone-lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="the expert's seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stage-fusion", default="gated", help="the fusion fit_staged trains on the features")
    parser.add_argument("--fusion", default="all", help="mmfuse compare --fusion")
    parser.add_argument("--fusion-seeds", type=int, default=5, help="mmfuse compare --seeds")
    parser.add_argument("--fusion-epochs", type=int, default=None, help="mmfuse compare --epochs (default: preset)")
    parser.add_argument("--jobs", type=int, default=2, help="mmfuse compare --jobs")
    parser.add_argument("--out", default="runs/mosi-staged-finetuned", help="run folder (replaced)")
    args = parser.parse_args()
    args.frozen = False  # what mosi_finetune_minilm's overrides read: the backbone is fine-tuned
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # 1-2. the expert on train only, its features for every split (+ fit_staged's own fusion stage)
    ds = load_dataset(NAME)
    model_over, train_over = _overrides(args)
    expert_model, expert_train = settings_for(
        preset_for(ds), "unimodal-text", model_overrides=model_over, train_overrides=train_over, epochs=args.epochs
    )
    preset = Preset.from_dict(FUSION_PRESET, dataset_preset(FUSION_PRESET) or {})
    stage_model, stage_train = settings_for(preset, args.stage_fusion, train_overrides={"device": "cpu"})
    print(f"expert stage: load average {_load()} at the start", flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    staged = fit_staged(
        ds.split("train"),
        ds.split("val"),
        _expert(ds, expert_model, expert_train),
        fusion={**stage_model, "fusion": args.stage_fusion},
        fusion_train=TrainConfig(**stage_train),
        test=ds.split("test"),
        out_dir=out / "staged",
    )
    expert = staged.experts["text_expert"]
    fusion = staged.fusion
    kept = next(row for row in fusion.history if row["epoch"] == fusion.best_epoch)
    print(
        f"expert: kept epoch {expert.best_epoch} of {expert.epochs_run} (lowest training loss); "
        f"fit_staged's {args.stage_fusion}: epoch {fusion.best_epoch} kept on val {fusion.monitor}, "
        f"val accuracy {kept['val_accuracy']:.4f}"
    )
    print(
        f"expert + features + {args.stage_fusion}: {time.perf_counter() - wall:.0f} s wall, "
        f"{time.process_time() - cpu:.0f} s CPU; load average {_load()} at the end; features in {staged.features.path}",
        flush=True,
    )

    # 3. every fusion over the features: mmfuse compare with the mosi-utterance-clean preset
    preset_file = atomic_write_json(out / "preset.json", {**preset.to_dict(), "name": FUSION_PRESET})
    command = [
        str(Path(sys.executable).with_name("mmfuse")),
        "compare",
        "--dataset",
        str(staged.features.path),
        "--preset",
        str(preset_file),
        "--fusion",
        args.fusion,
        "--seeds",
        str(args.fusion_seeds),
        "--jobs",
        str(args.jobs),
        "--device",
        "cpu",
        "--out",
        str(out / "compare"),
    ]
    if args.fusion_epochs is not None:
        command += ["--epochs", str(args.fusion_epochs)]
    print(" ".join(command), f"\ncompare: load average {_load()} at the start", flush=True)
    wall, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(command, check=True)
    print(
        f"compare: {time.perf_counter() - wall:.0f} s wall, {_children_cpu() - cpu:.0f} s CPU (user + sys); "
        f"load average {_load()} at the end"
    )


if __name__ == "__main__":
    main()
