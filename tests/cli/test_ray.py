"""`biogpt ner --ray ADDRESS`: the same job on a local Ray instance (2 CPUs) this module starts,
one model replica per worker; its output equals the single-process run, and it resumes by id."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import assert_same_results, read_jsonl, run_cli

ray = pytest.importorskip("ray", reason="Ray is the optional [scale] extra (requirements-dev.txt installs it)")


@pytest.fixture(scope="module")
def cluster() -> str:
    """The address of a Ray instance with 2 CPUs, started here once for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_run_equals_the_single_process_run(cluster, corpus, expected, tmp_path):
    """One run, resumed: five documents are already in the output (a stopped job); Ray computes the
    rest with two replicas, and the whole output equals the single-process run's."""
    output = tmp_path / "on-ray.jsonl"
    output.write_text("".join(json.dumps(result) + "\n" for result in expected[:5]), encoding="utf-8")
    done = run_cli("ner", str(corpus), "-o", str(output), "--ray", cluster, "--ray-workers", "2", "--batch", "4",
                   timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(expected) - 5} written, 5 already done (skipped), 0 bad" in done.stderr, done.stderr
    assert_same_results(read_jsonl(output), expected)  # same records, same order
