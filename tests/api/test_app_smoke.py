"""`python app.py --port N` starts and answers HTTP 200 on its port, and says on the page and in
its log which int8 kernel it chose on this CPU."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request

from testkit.app_server import free_port
from testkit import REPO


@contextlib.contextmanager
def app_process(*flags: str, **environment: str):
    """Yield (url, process) for `python app.py --port N *flags`, its output in process.stdout."""
    port = free_port()
    env = {**os.environ, "no_proxy": "127.0.0.1,localhost", **environment}
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *flags], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    assert "BioGPT Studio" in response.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app did not answer within 60 s"
                time.sleep(0.3)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_app_starts_and_answers_on_its_port():
    with app_process():
        pass


def test_int8_on_a_cpu_where_8_bit_fbgemm_fails_says_its_fallback_in_the_header_and_the_log():
    """What an AVX2 machine without VNNI does, forced on any CPU by distrusting the 8-bit path."""
    with app_process("--quantize", "int8", "--no-preload", BIOGPT_DISTRUST_KERNELS="fbgemm-u8") as (url, process):
        with urllib.request.urlopen(url + "config", timeout=10) as response:
            config = response.read().decode()
        process.terminate()
        log = process.communicate(timeout=20)[0]
    assert "with <b>int8</b> weights (fbgemm, 7-bit activations; checked on this CPU)" in config
    assert "int8 layers use fbgemm, 7-bit activations, not fbgemm (fbgemm-u8 distrusted)." in log


def test_the_soak_benchmark_runs_end_to_end_in_a_short_smoke_run():
    """bench/bench_soak.py with 3 visitors for 6 s, so the prepared soak cannot break unnoticed."""
    run = subprocess.run([sys.executable, "bench_soak.py", "--clients", "3", "--minutes", "0.1", "--settle", "1",
                          "--warmup", "3"], cwd=REPO / "bench", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "errors by kind: none" in run.stdout, run.stdout
    assert "server RSS: start" in run.stdout and "endpoint   requests" in run.stdout, run.stdout
