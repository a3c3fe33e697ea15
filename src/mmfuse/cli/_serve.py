"""``mmfuse serve`` and ``mmfuse stream``: thin wrappers over :mod:`mmfuse.stream.server` and its client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli._common import console

__all__ = ["serve", "stream"]


def serve(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (e.g. runs/X/models/<fusion>-seed0).")],
    host: Annotated[str, typer.Option(help="Bind address; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="MMFUSE_TOKEN", help="Token clients must send (required off loopback).")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Grid rate in Hz when the model has no stream.json.")] = None,
    max_streams: Annotated[int, typer.Option(help="Most concurrent streams.")] = 256,
    max_message_bytes: Annotated[int, typer.Option(help="Largest WebSocket message.")] = 65536,
    queue_size: Annotated[int, typer.Option(help="Per-stream queue bound (oldest dropped beyond it).")] = 256,
    max_watchers: Annotated[int, typer.Option(help="Most concurrent live-page watchers (/ws/watch).")] = 64,
    idle_timeout: Annotated[float, typer.Option(help="Seconds a silent stream is kept before it is closed.")] = 300.0,
) -> None:
    """Serve a trained causal model: WebSocket streams, HTTP batch predictions, a live page at /."""
    from mmfuse.stream import load_model_assets
    from mmfuse.stream.server import ServerConfig
    from mmfuse.stream.server import serve as run_server

    config = ServerConfig(
        host=host,
        port=port,
        token=token,
        rate=rate,
        max_streams=max_streams,
        max_message_bytes=max_message_bytes,
        queue_size=queue_size,
        max_watchers=max_watchers,
        idle_timeout=idle_timeout,
    )
    assets = load_model_assets(model_dir)

    def banner() -> None:  # after the model is checked and the port bound: a failure never follows it
        console.print(
            f"mmfuse serving {model_dir} on http://{host}:{port} (live page: /, stream: ws://{host}:{port}/ws)"
        )

    run_server(assets, config, on_ready=banner)


def stream(
    recording: Annotated[Path, typer.Argument(help="A recording folder of <modality>.csv|npz|parquet files.")],
    url: Annotated[str, typer.Option(help="The server's WebSocket URL.")] = "ws://127.0.0.1:8000/ws",
    speed: Annotated[
        float, typer.Option(help="Playback speed: 1 = real time, 10 = ten times faster, 0 = at once.")
    ] = 1.0,
    token: Annotated[str | None, typer.Option(envvar="MMFUSE_TOKEN", help="Server token.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the predictions as JSON lines here.")] = None,
) -> None:
    """Replay a recording to a running server as a live stream and summarise the predictions."""
    from mmfuse._io import atomic_write_text
    from mmfuse.stream.client import replay_recording

    result = replay_recording(recording, url, speed=speed, token=token)
    preds = result["predictions"]
    console.print(
        f"stream {result['stream_id']}: {result['events']} events sent, {len(preds)} predictions, "
        f"{len(result['errors'])} errors; latency ms {result['latency_ms']}"
    )
    for err in result["errors"][:5]:
        console.print(f"[red]error[/] {err.get('error')}: {err.get('detail')}", highlight=False)
    if preds:
        last = preds[-1]
        console.print(
            f"last step t={last['t']}: label {last.get('class_name', last.get('label'))}, stable {last['stable']}"
        )
    if out is not None:
        lines = [json.dumps({k: v for k, v in p.items() if not k.startswith("_")}) for p in preds]
        atomic_write_text(out, "\n".join(lines) + ("\n" if lines else ""))
        console.print(f"Wrote {out}")
