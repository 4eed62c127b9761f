"""Helpers of the tests alone: perturbed random checkpoints saved by transformers and loaded by
both sides, Chromium pages and the screenshots folder, a request on a bare socket, a copied link. What the
benchmarks use too is in testkit/."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import torch

from testkit import REPO
from testkit.checkpoints import perturb_

ARTIFACTS = REPO / "tests" / "artifacts"

# Shapes the parity tests cover: a tiny one, an odd one, and the real microsoft/biogpt shape.
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=128)
ODD = dict(vocab_size=777, hidden_size=96, num_hidden_layers=5, num_attention_heads=3, intermediate_size=200,
           max_position_embeddings=96)
FULL = dict()  # transformers' BioGptConfig defaults are microsoft/biogpt's shape


def hf_checkpoint(
    tmp_path: Path, shape: dict, head: str = "BioGptForCausalLM", seed: int = 0, scale: float = 20.0, **config_kwargs
) -> Path:
    """Build a perturbed transformers model of `shape`, save it, return the folder."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.BioGptConfig(**shape, **config_kwargs)
    model = getattr(transformers, head)(config)
    perturb_(model, seed, scale)
    folder = tmp_path / f"{head}-{seed}"
    model.save_pretrained(folder)
    return folder


def load_hf(folder: Path, head: str = "BioGptForCausalLM"):
    """The oracle in fp32 (transformers 5 would keep a checkpoint's fp16), with eager attention
    so that attentions are returned."""
    import transformers

    return getattr(transformers, head).from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium_page(url: str):
    """A page of Debian's Chromium (Playwright cannot download its own browser here) at `url`.

    `page.console_errors` collects console errors and uncaught exceptions for the test to check.
    """
    import tempfile

    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's Chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="biogpt-browser-"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1360, "height": 1000},
        )
        page = context.new_page()
        page.console_errors = []
        page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
        page.on("pageerror", lambda error: page.console_errors.append(str(error)))
        page.goto(url)
        try:
            yield page
        finally:
            context.close()


@contextlib.contextmanager
def offline_page(context, path: Path):
    """A new page of `context` showing the file at `path` with every other request aborted: yields
    (page, blocked URLs, page errors), for reports that must work without a network."""
    page = context.new_page()
    blocked, errors = [], []

    def block(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", block)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    try:
        yield page, blocked, errors
    finally:
        page.close()


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//")[1].strip("/").split(":")
    return host, int(port)


def raw_response(url: str, head: bytes, chunks=()) -> tuple[bytes, float]:
    """Send a request head and body chunks on a bare socket; (the response, seconds to it)."""
    started = time.perf_counter()
    with socket.create_connection(host_port(url), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed while the body was still coming
            pass
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer, time.perf_counter() - started


def copied_link(page, button: str, timeout: float = 15) -> str:
    """Click a "Copy link" button; the link it copied, once the clipboard holds the address bar's link.
    Polled from here: Playwright's wait_for_function takes a promise for a truthy value, even one resolving to null."""
    page.click(button)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        copied = page.evaluate("navigator.clipboard.readText()")
        if copied == page.evaluate("window.location.href") and "?tab=" in copied:
            return copied
        page.wait_for_timeout(100)
    raise AssertionError(f"{button} never copied the address bar's link")
