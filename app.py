"""BioGPT Studio: `python app.py [--model ID_OR_PATH] [--device auto|cpu|cuda|mps]
[--dtype auto|float32|float16|bfloat16] [--quantize none|int8|int4|8bit|4bit] [--host 127.0.0.1]
[--port 7860] [--allow-model ID_OR_PATH ...]`; `python app.py --help` lists the queue flags too.
`biogpt-studio` (installed with `pip install .[app]`) is the same command.

Every flag can also be set by an environment variable, for a Hugging Face Space (which runs
`python app.py` without arguments): BIOGPT_STUDIO_ and the flag's name in capitals with
underscores, e.g. BIOGPT_STUDIO_MODEL=microsoft/biogpt, BIOGPT_STUDIO_ALLOW_MODEL=a,b (lists are
comma-separated), BIOGPT_STUDIO_NO_PRELOAD=1. A flag on the command line wins over its variable.

Offline-safe settings are set before gradio is imported: no analytics, no telemetry, no hub
calls from gradio_client, and loopback traffic never goes through a proxy. Nothing is
loaded at import time; the bundled models load in the background once the server is up.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys


def offline_safe_environment() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    for variable in ("no_proxy", "NO_PROXY"):
        hosts = [h for h in os.environ.get(variable, "").split(",") if h]
        os.environ[variable] = ",".join(dict.fromkeys(hosts + ["127.0.0.1", "localhost"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="BioGPT Studio: run, inspect and teach BioGPT.")
    parser.add_argument("--model", default="bundled",
                        help="default language model: 'bundled', a hub id like microsoft/biogpt, or a local folder")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="auto: float32 on CPU, bfloat16 (or float16) on a GPU; bfloat16 on a CPU without AVX-512 "
                             "is emulated and reads prompts about 5x slower than float32 (the header says so)")
    # A Hugging Face Space sets GRADIO_SERVER_NAME=0.0.0.0; locally the default stays private.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (0.0.0.0 for a Space or a LAN)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--allow-model", action="append", default=[], metavar="ID_OR_PATH",
                        help="also offer this hub id or folder in the model pickers (repeatable); visitors "
                             "can choose only the bundled models, the microsoft/* ones and these")
    parser.add_argument("--quantize", default="none", choices=["none", "int8", "int4", "8bit", "4bit"],
                        help="quantize weights at load: int8/int4 on the CPU (int8: about 4.8x faster decoding), "
                             "8bit/4bit (bitsandbytes) on CUDA")
    parser.add_argument("--concurrency", type=int, default=2, help="requests computed at once (default 2)")
    parser.add_argument("--queue-size", type=int, default=32,
                        help="requests waiting in each tab at most (default 32); more are refused")
    parser.add_argument("--visitor-requests", type=int, default=6,
                        help="requests one visitor (client address) may have queued or running, all tabs (default 6)")
    parser.add_argument("--visitor-requests-per-tab", type=int, default=2,
                        help="the same in any one tab (default 2); --queue-size is the waiting room of each tab")
    parser.add_argument("--no-batching", action="store_true",
                        help="decode each Generate request on its own instead of merging concurrent ones")
    parser.add_argument("--max-loaded-models", type=int, default=4, help="models kept in memory (least recently used go)")
    parser.add_argument("--model-memory-gb", type=float, default=None,
                        help="GB the loaded models' weights may take together (default: half the RAM, or of the GPU's "
                             "memory); least recently used models go first, a model larger than this is refused")
    parser.add_argument("--no-preload", action="store_true", help="load models on first use only")
    environment_defaults(parser)
    return parser.parse_args(argv)


ENV_PREFIX = "BIOGPT_STUDIO_"
TRUE, FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def environment_variable(action: argparse.Action) -> str:
    """BIOGPT_STUDIO_ + the long flag's name: --model-memory-gb -> BIOGPT_STUDIO_MODEL_MEMORY_GB."""
    return ENV_PREFIX + action.option_strings[-1].lstrip("-").upper().replace("-", "_")


def environment_defaults(parser: argparse.ArgumentParser) -> None:
    """Each flag's default from its environment variable, checked as the flag would be."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        name = environment_variable(action)
        action.help = (action.help or "") + f" [env {name}]"
        raw = os.environ.get(name)
        if raw is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            if raw.strip().lower() not in TRUE + FALSE:
                parser.error(f"{name}={raw!r}: use 1 or 0.")
            value = raw.strip().lower() in TRUE
        elif isinstance(action, argparse._AppendAction):
            value = [item.strip() for item in raw.split(",") if item.strip()]
        else:
            try:
                value = action.type(raw) if action.type else raw
            except ValueError:
                parser.error(f"{name}={raw!r} is not a valid {action.type.__name__}.")
            if action.choices and value not in action.choices:
                parser.error(f"{name}={raw!r}: choose one of {', '.join(map(str, action.choices))}.")
        parser.set_defaults(**{action.dest: value})


def port_taken(host: str, port: int) -> bool:
    """Whether another program already listens on host:port (checked before anything loads)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE  # any other problem is left to launch() to report
    return False


def busy_port_exit(host: str, port: int) -> None:
    print(f"Port {port} on {host} is already in use (another BioGPT Studio?): stop that server, or choose "
          f"another port with --port, e.g. python app.py --port {port + 1}.", file=sys.stderr)
    raise SystemExit(1)


def build(args: argparse.Namespace):
    """The engine and the queued app, not yet launched."""
    from biogpt.serving import Engine
    from ui import create_app
    from ui.admission import AdmissionLimits, install as install_admission

    from biogpt.serving.zerogpu import gpu_decorator, on_zero_gpu

    gpu = gpu_decorator()  # spaces.GPU on a ZeroGPU Space, else None
    engine = Engine(default_model=args.model, device=args.device, dtype=args.dtype,
                    allowed_models=args.allow_model, max_loaded_models=args.max_loaded_models,
                    quantize=None if args.quantize == "none" else args.quantize,
                    batching=not args.no_batching and gpu is None, model_memory_gb=args.model_memory_gb)
    if gpu is not None:
        engine = on_zero_gpu(engine, gpu)
    demo = create_app(engine)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=None)  # no shared cap: each tab has its own
    install_admission(demo, AdmissionLimits(args.visitor_requests, args.visitor_requests_per_tab, args.queue_size))
    return engine, demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    offline_safe_environment()
    if port_taken(args.host, args.port):
        busy_port_exit(args.host, args.port)
    engine, demo = build(args)
    from ui import launch_options

    try:
        demo.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, **launch_options())
    except OSError as error:  # taken between the check and the launch: Gradio's message names the wrong setting
        if "empty port" not in str(error):
            raise
        busy_port_exit(args.host, args.port)
    if not args.no_preload:
        # Once the page is served, load the default models in the background so they are ready
        # before the first visitor clicks (a request that comes sooner waits for the same load).
        engine.preload([(engine.default_model, "generate"), ("bundled-ner", "ner"), ("bundled-hoc", "classify")])
    demo.block_thread()


if __name__ == "__main__":
    main()
