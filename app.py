"""BioGPT Studio: `python app.py [--host 127.0.0.1] [--port 7860]`.

Offline-safe settings are set before gradio is imported: no analytics, no telemetry, no hub
calls from gradio_client, and loopback traffic never goes through a proxy.
"""

from __future__ import annotations

import argparse
import os


def offline_safe_environment() -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    for variable in ("no_proxy", "NO_PROXY"):
        hosts = [h for h in os.environ.get(variable, "").split(",") if h]
        os.environ[variable] = ",".join(dict.fromkeys(hosts + ["127.0.0.1", "localhost"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="BioGPT Studio: run, inspect and teach BioGPT.")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 for a Space or a LAN)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    return parser.parse_args(argv)


def create_app():
    import gradio as gr

    with gr.Blocks(title="BioGPT Studio") as demo:
        gr.Markdown(
            "# BioGPT Studio\n"
            "The model core is in place; the Generate, NER, Classify and Attention tabs arrive with "
            "their issues. Outputs of a language model are not medical advice."
        )
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    offline_safe_environment()
    import gradio as gr

    demo = create_app()
    demo.queue(default_concurrency_limit=2, max_size=32)
    demo.launch(
        server_name=args.host, server_port=args.port, share=False, ssr_mode=False,
        theme=gr.themes.Default(font=["DejaVu Sans", "Arial", "sans-serif"]),
    )


if __name__ == "__main__":
    main()
