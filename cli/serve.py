"""`hearth serve`: an OpenAI-compatible HTTP server on hearth's engine (the face lives in serve/)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import HearthError
from . import _options as opt
from . import _output as out
from .app import command


@command("serve")
def serve(
    model: opt.Model = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port, shown in the listening line).")] = 8080,
    parallel: Annotated[Optional[int], typer.Option("--parallel", "-p", min=1, max=254, help="Requests (or samples) decoded together (default: 16 on a CPU, 64 with every layer on a GPU, fewer if memory is short).")] = None,
    ctx: Annotated[Optional[int], typer.Option("--ctx", "-c", min=256, help="Context per request in tokens: prompt + answer (default: planned, 4096 at most).")] = None,
    queue: Annotated[Optional[int], typer.Option("--queue", min=0, help="Requests that may wait for a free slot before the server answers 503 (default 64).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="HEARTH_API_KEY", show_envvar=True, help="Require `Authorization: Bearer KEY` on every endpoint but /health.")] = None,
    lookup: Annotated[bool, typer.Option("--lookup", help="Speculative decoding with prompt-lookup drafts for every request of one answer (a request opts out with \"speculative\": \"off\"; without this flag it opts in with \"lookup\" or a prediction).")] = False,
    threads: opt.Threads = None,
    gpu_layers: opt.GpuLayers = None,
    verbose: opt.Verbose = 0,
) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) on this model.

    Concurrent requests decode together in one llama.cpp batch; `n` gives n choices from one
    prompt evaluation; `"vote": {"answer": "number"}` in a request runs reasoning mode. A
    conversation's next turn reuses the KV cache of its earlier turns; `"speculative": "lookup"`
    or OpenAI's `prediction` drafts tokens from the prompt or the predicted text. GET /health answers 200
    once the model is loaded. SIGINT or SIGTERM stops it (exit 0); no prompt text is logged
    unless -v.

    Examples:

      hearth serve                                   # http://127.0.0.1:8080/v1

      hearth serve -m bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M --parallel 8

      HEARTH_API_KEY=secret hearth serve --host 0.0.0.0 --port 9000
    """
    out.set_verbosity(verbose)
    try:
        from ..serve.server import Reporter, ServeSettings, serve as run_server
    except ImportError as exc:
        raise HearthError(f"hearth serve needs FastAPI and uvicorn ({exc.name} is missing)",
                          hint='pip install "hearth[serve]"') from None
    settings = ServeSettings(model=model, host=host, port=port, parallel=parallel, ctx=ctx, threads=threads,
                             gpu_layers=gpu_layers, queue=queue, api_key=api_key or None, lookup=lookup,
                             verbose=verbose)
    run_server(settings, Reporter(info=out.info, warn=out.warn, detail=out.detail))
